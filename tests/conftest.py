from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # litellm's token counter: no hub

from tests.support import services  # noqa: E402
from tests.support.cluster import Cluster, EmbeddedCluster, PostgresCluster  # noqa: E402


@pytest.fixture(scope="session")
def pg_template() -> str:
    services.create_template()
    return services.TEMPLATE


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test."""
    name = services.create_database()
    yield services.db_url(name)
    services.drop_database(name)


@pytest.fixture(params=["embedded", "postgres"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """The whole system, on SQLite + StubBroker and on PostgreSQL + Redis + worker processes."""
    if request.param == "postgres":
        request.getfixturevalue("pg_template")
        c: Cluster = PostgresCluster()
    else:
        c = EmbeddedCluster(tmp_path)
    yield c
    c.close()
