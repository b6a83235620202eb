"""Engines for the two backends: PostgreSQL through psycopg 3, SQLite embedded."""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from ..errors import ConfigurationError


def normalize_url(url: str) -> sa.URL:
    """Parse `url`, sending every PostgreSQL URL through psycopg 3."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(
            f"Not a database URL: {url!r}. Use 'postgresql+psycopg://user@host/db' "
            "or 'sqlite:///baton.db'."
        ) from exc
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        raise ConfigurationError(
            f"Unsupported database {parsed.get_backend_name()!r} in {url!r}: "
            "baton_dramatiq stores workflows in PostgreSQL or SQLite."
        )
    return parsed


def create_engine(url: str, *, pool_size: int = 10) -> sa.Engine:
    """An engine tuned for many short transactions from worker threads."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(parsed, pool_size=pool_size, max_overflow=2 * pool_size)
    memory = parsed.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
    if memory:
        kwargs["poolclass"] = StaticPool
    engine = sa.create_engine(parsed, **kwargs)
    configure_sqlite(engine, wal=not memory)
    return engine


def configure_sqlite(engine: sa.Engine, *, wal: bool = True) -> None:
    """Make every SQLite transaction take the write lock up front (BEGIN IMMEDIATE).

    pysqlite's default deferred transactions upgrade their lock on the first write and
    fail with "database is locked" when two processes do so at once; an immediate
    transaction waits its turn instead. WAL lets readers run beside the writer.
    """

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        if wal:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
