"""What the migration tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import baton_dramatiq as baton
from tests.support import services


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-schema"])
def empty_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[baton.Store]:
    """A store on a database that was never migrated."""
    if request.param == "sqlite":
        store = baton.Store(f"sqlite:///{tmp_path / 'm.db'}")
        yield store
        store.dispose()
        return
    request.getfixturevalue("pg_template")
    name = services.create_database(migrated=False)
    schema = "baton_space" if request.param == "postgresql-schema" else None
    store = baton.Store(services.db_url(name), schema=schema)
    yield store
    store.dispose()
    services.drop_database(name)
