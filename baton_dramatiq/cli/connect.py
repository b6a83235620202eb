"""The options every subcommand takes, and opening what they point at.

The store, the bus and the client broker are closed with the command's click context.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import redis
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker

import baton_dramatiq as baton

from .. import migrations
from ..store.engine import normalize_url

DEFAULT_DATABASE_URL = "sqlite:///baton.db"

F = TypeVar("F", bound=Callable[..., Any])


def connection_options(
    *,
    database_help: str = "The workflow store: postgresql://... or sqlite:///file.db.",
    redis_help: str = "Redis for live events; without it, watch re-reads the store.",
    show_database_default: bool = True,
) -> Callable[[F], F]:
    """The --database-url and --redis-url options every subcommand takes."""

    def decorate(fn: F) -> F:
        fn = click.option(
            "--redis-url",
            envvar="BATON_REDIS_URL",
            default=None,
            metavar="URL",
            show_envvar=True,
            help=redis_help,
        )(fn)
        return click.option(
            "--database-url",
            envvar="BATON_DATABASE_URL",
            default=DEFAULT_DATABASE_URL,
            show_default=show_database_default,
            metavar="URL",
            show_envvar=True,
            help=database_help,
        )(fn)

    return decorate


def open_store(url: str, *, create: bool = False) -> baton.Store:
    """A reachable store on `url`; migrated unless `create` (for `migrate`) is set.

    A missing SQLite file is an error rather than a new empty database left behind.
    """
    parsed = normalize_url(url)  # ConfigurationError for what is not a database URL
    where = parsed.render_as_string(hide_password=True)
    database = parsed.database
    if (
        not create
        and parsed.get_backend_name() == "sqlite"
        and database not in (None, "", ":memory:")
        and not Path(database).exists()
    ):
        raise click.ClickException(
            f"No SQLite database at {database}: run `baton migrate --database-url {where}` first"
        )
    store = baton.Store(url)
    click.get_current_context().call_on_close(store.dispose)
    try:
        with store.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except baton.StoreError as exc:
        raise baton.StoreError(f"Cannot open the database {where}: {exc}") from exc
    if not create:
        migrations.check(store)  # "run baton migrate" for an unmigrated database
    return store


def check_redis(url: str) -> None:
    """Fail with one line, up front, when Redis at `url` cannot be reached."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--redis-url'") from exc
    try:
        client.ping()
    except redis.RedisError as exc:
        raise click.ClickException(f"Cannot reach Redis at {safe_url(url)}: {exc}") from exc
    finally:
        client.close()


def open_bus(redis_url: str) -> baton.RedisEventBus:
    """The event bus on a Redis that was checked to answer; closed with the command."""
    check_redis(redis_url)
    bus = baton.RedisEventBus(redis_url)
    click.get_current_context().call_on_close(bus.close)
    return bus


def client_broker(store: baton.Store, bus: baton.EventBus | None = None) -> StubBroker:
    """A broker for this process's calls, so that none falls back to the global broker.

    Given a bus, it carries a WorkflowMiddleware publishing there, so that watchers see a
    cancel at once. Without, it has none: a cancel then publishes nothing and leaves
    `workflow_finished` unmarked, for the Sweeper to send where it belongs.
    """
    broker = StubBroker()
    click.get_current_context().call_on_close(broker.close)
    if bus is not None:
        broker.add_middleware(baton.WorkflowMiddleware(store, events=bus, check_schema=False))
    return broker


def safe_url(url: str) -> str:
    """`url` with its password hidden, or as given when it does not parse."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url
