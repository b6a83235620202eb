"""Fresh PostgreSQL databases and Redis namespaces, created and dropped by the harness.

Every database is named ``baton_bench_*`` and cloned from a migrated template made once
per run; every Redis key a contender writes starts with its namespace ``bb-*``, so
dropping a namespace deletes exactly what that contender wrote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator

import psycopg
import redis

DB_PREFIX = "baton_bench_"
NS_PREFIX = "bb-"


@dataclasses.dataclass(frozen=True)
class Env:
    """One contender's private corner of the services."""

    namespace: str
    db_name: str  # "" when the contender needs no database
    database_url: str


class Services:
    """The PostgreSQL server and the Redis server every contender uses."""

    def __init__(self, pg_admin_url: str, redis_url: str) -> None:
        self.pg_admin_url = pg_admin_url
        self.redis_url = redis_url
        self.template: str | None = None

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(self.pg_admin_url, autocommit=True)

    def db_url(self, name: str) -> str:
        """The SQLAlchemy URL of database `name` on the admin URL's server."""
        base = self.pg_admin_url.rsplit("/", 1)[0]
        return f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"

    # -- PostgreSQL --------------------------------------------------------------------

    def _make_template(self) -> str:
        import baton_dramatiq as baton

        name = f"{DB_PREFIX}tpl_{uuid.uuid4().hex[:8]}"
        with self._admin() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        store = baton.Store(self.db_url(name))
        try:
            baton.migrations.upgrade(store)
        finally:
            store.dispose()
        return name

    def create_database(self) -> str:
        """A new database with baton's tables; returns its name."""
        if self.template is None:
            self.template = self._make_template()
        name = f"{DB_PREFIX}{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def commits(self, name: str) -> int:
        """Transactions committed in database `name` so far (pg_stat_database)."""
        with self._admin() as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (name,)
            ).fetchone()
        return int(row[0]) if row else 0

    # -- Redis -------------------------------------------------------------------------

    @staticmethod
    def new_namespace() -> str:
        return f"{NS_PREFIX}{uuid.uuid4().hex[:10]}"

    def drop_namespace(self, namespace: str) -> int:
        """Delete every key that starts with `namespace`; returns how many."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            deleted = 0
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{namespace}*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += client.delete(*batch)
                    batch.clear()
            if batch:
                deleted += client.delete(*batch)
            return deleted
        finally:
            client.close()

    @contextlib.contextmanager
    def environment(self, *, database: bool) -> Iterator[Env]:
        """A fresh namespace (and a fresh database when asked), dropped on exit."""
        namespace = self.new_namespace()
        db_name = self.create_database() if database else ""
        try:
            yield Env(namespace, db_name, self.db_url(db_name) if db_name else "")
        finally:
            if db_name:
                self.drop_database(db_name)
            self.drop_namespace(namespace)

    def close(self) -> None:
        """Drop the template database."""
        if self.template is not None:
            self.drop_database(self.template)
            self.template = None

    def cleanup_leftovers(self) -> tuple[int, int]:
        """Drop every ``baton_bench_*`` database and ``bb-*`` key (after a killed run)."""
        with self._admin() as conn:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s", (DB_PREFIX + "%",)
                )
            ]
        for name in names:
            self.drop_database(name)
        return len(names), self.drop_namespace(NS_PREFIX)
