"""Fixtures for the LLM toolkit's tests: a fake provider on 127.0.0.1, and clusters
whose brokers carry the LLM test actors. Nothing here reaches a real provider."""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import baton_dramatiq as baton
from baton_dramatiq.llm.testing import FakeProvider
from tests.support.cluster import Cluster, EmbeddedCluster, PostgresCluster
from tests.support.llm_actors import declare_llm


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    """An OpenAI-compatible server on 127.0.0.1 that answers what each test scripts."""
    with FakeProvider() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _default_debug_settings() -> Iterator[None]:
    yield
    baton.debug.set_redactor(None)
    baton.debug.set_field_limit(64_000)


def with_llm_actors(cluster: Cluster) -> Cluster:
    record = getattr(cluster, "_record", lambda *_: None)
    cluster.llm = declare_llm(cluster.broker, record)  # type: ignore[attr-defined]
    return cluster


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Cluster]:
    """SQLite + StubBroker + a worker in this process, with the LLM actors."""
    cluster = with_llm_actors(EmbeddedCluster(tmp_path))
    yield cluster
    cluster.close()


@pytest.fixture(params=["embedded", "postgres"])
def llm_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """The whole system with the LLM actors, embedded and on PostgreSQL + Redis + workers."""
    if request.param == "postgres":
        request.getfixturevalue("pg_template")
        cluster: Cluster = PostgresCluster()
    else:
        cluster = EmbeddedCluster(tmp_path)
    yield with_llm_actors(cluster)
    cluster.close()


def actors(cluster: Cluster) -> types.SimpleNamespace:
    return cluster.llm  # type: ignore[attr-defined, no-any-return]
