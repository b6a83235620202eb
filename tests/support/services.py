"""Real services for the tests: a PostgreSQL database per test, a Redis namespace per test."""

from __future__ import annotations

import os
import uuid

import psycopg
import redis

PG_ADMIN_URL = os.environ.get("BATON_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BATON_TEST_REDIS", "redis://127.0.0.1:6379/0")
TEMPLATE = "baton_test_template"


def _admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True)


def db_url(name: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"


def create_template() -> None:
    """A migrated database every test database is cloned from."""
    import baton_dramatiq as baton

    with _admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    store = baton.Store(db_url(TEMPLATE))
    baton.migrations.upgrade(store)
    store.dispose()


def create_database(*, migrated: bool = True) -> str:
    name = f"baton_t_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {TEMPLATE}" if migrated else ""))
    return name


def drop_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def new_namespace() -> str:
    return f"bt-{uuid.uuid4().hex[:10]}"


def drop_namespace(namespace: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
