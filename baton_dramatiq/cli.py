"""`baton`: the command line — migrate, run the demo, list, inspect, watch and cancel.

Every subcommand takes ``--database-url`` (``BATON_DATABASE_URL``, else
``sqlite:///baton.db``) and ``--redis-url`` (``BATON_REDIS_URL``). Bad input ends with
one line on stderr and a non-zero exit, never a traceback (``BATON_DEBUG=1`` shows it).
The core never imports this module.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import redis
import sqlalchemy as sa
from click.core import ParameterSource
from dramatiq.brokers.stub import StubBroker
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

import baton_dramatiq as baton

from . import migrations
from .events import STEP_UPDATED, WORKFLOW_FINISHED, Event
from .query import finished_event
from .store.engine import normalize_url

DEFAULT_DATABASE_URL = "sqlite:///baton.db"
#: how often `watch` re-reads the store when it has no Redis to listen to, in seconds
POLL_SECONDS = 0.2
#: the width of tables when output goes to a pipe or a file
PIPE_COLUMNS = 160

F = TypeVar("F", bound=Callable[..., Any])

STATE_STYLES = {
    "pending": "dim",
    "available": "dim",
    "executing": "yellow",
    "running": "yellow",
    "snoozed": "cyan",
    "retryable": "dark_orange",
    "waiting": "blue",
    "completed": "green",
    "discarded": "red",
    "failed": "red",
    "cancelled": "magenta",
}


# -- the group and its error handling ---------------------------------------------------


class BatonGroup(click.Group):
    """A click group that reports every expected error as one line on stderr."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            # standalone_mode=False: click hands us its errors instead of printing usage
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("Interrupted.", err=True)
            code = 130
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            code = _fail(exc.format_message() + hint, exc.exit_code)
        except click.ClickException as exc:
            code = _fail(exc.format_message(), exc.exit_code)
        except (baton.BatonError, redis.RedisError, sa.exc.SQLAlchemyError) as exc:
            code = _fail(str(exc) or type(exc).__name__, 1)
        except Exception as exc:
            if os.environ.get("BATON_DEBUG"):
                raise
            code = _fail(f"{type(exc).__name__}: {exc} (BATON_DEBUG=1 shows the traceback)", 1)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> int:
    click.echo("Error: " + " ".join(message.split()), err=True)  # one line, always
    return code


@click.group(cls=BatonGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(baton.__version__, prog_name="baton")
def cli() -> None:
    """Run, inspect and watch baton_dramatiq workflows."""


def main(argv: Sequence[str] | None = None) -> None:
    """The `baton` console script."""
    cli.main(args=argv, prog_name="baton")


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


# -- opening the store, the bus and a broker --------------------------------------------


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
        raise click.ClickException(f"Cannot reach Redis at {_safe_url(url)}: {exc}") from exc
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


def _safe_url(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


# -- rendering ------------------------------------------------------------------------


def console() -> Console:
    """Standard output through rich.

    Made per call, as click's test runner swaps sys.stdout between invocations. Piped
    output is not cut at rich's default of 80 columns, which would fold workflow ids.
    """
    out = Console(highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPE_COLUMNS
    return out


def styled(state: str | None) -> Text:
    return Text(state or "-", style=STATE_STYLES.get(state or "", ""))


def when(moment: dt.datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return moment.astimezone(dt.UTC).strftime(fmt) if moment else "-"


def took(start: dt.datetime | None, end: dt.datetime | None) -> str:
    return f"{(end - start).total_seconds():.2f} s" if start and end else "-"


class Progress:
    """Prints one line per event: seconds since `since`, step, state, attempt."""

    def __init__(self, out: Console, since: dt.datetime) -> None:
        self.out, self.since = out, since

    def show(self, event: Event) -> None:
        p = event.payload
        line = Text(f"{self._offset(p.get('at')):>+8.2f}s  ", style="dim")
        if event.event == STEP_UPDATED:
            line.append(f"{p['step_name']:<16} ", style="bold")
            line.append(styled(p["state"]))
            line.append(" " * max(1, 11 - len(p["state"])) + f"attempt {p['attempt']}")
            if p.get("error") and p["state"] not in ("executing", "completed"):
                # an executing step still carries its previous attempt's error
                line.append(f"  {p['error']}", style="red")
        elif event.event == WORKFLOW_FINISHED:
            line.append(f"{'workflow':<16} ", style="bold")
            line.append(styled(p["outcome"]))
            if p.get("failed_steps"):
                line.append(f"  failed steps: {', '.join(p['failed_steps'])}", style="red")
        else:
            line.append(event.event)
        self.out.print(line, soft_wrap=True)

    def _offset(self, at: object) -> float:
        try:
            moment = dt.datetime.fromisoformat(str(at))
        except ValueError:
            moment = dt.datetime.now(dt.UTC)
        return (moment - self.since).total_seconds()


# -- commands -------------------------------------------------------------------------


@cli.command()
@connection_options()
def migrate(database_url: str, redis_url: str | None) -> None:
    """Create or upgrade baton's tables; safe to run again."""
    store = open_store(database_url, create=True)
    before = migrations.current(store)
    migrations.upgrade(store)
    after = migrations.current(store)
    where = store.engine.url.render_as_string(hide_password=True)
    if before == after:
        click.echo(f"{where} is at revision {after} (up to date)")
    else:
        click.echo(f"{where} migrated from {before or 'an empty database'} to revision {after}")


@cli.command("schema-sql")
@connection_options(
    database_help="Only its dialect counts, when given and --dialect is not.",
    redis_help="Not used.",
    show_database_default=False,
)
@click.option(
    "--dialect",
    type=click.Choice(["postgresql", "sqlite"]),
    default=None,
    help="Default: that of an explicit --database-url, else postgresql.",
)
@click.option("--schema", default=None, help="A PostgreSQL schema to put the tables in.")
@click.pass_context
def schema_sql(
    ctx: click.Context,
    database_url: str,
    redis_url: str | None,
    dialect: str | None,
    schema: str | None,
) -> None:
    """Print the plain SQL of every migration, for review or for a DBA to apply."""
    if dialect is None:
        explicit = ctx.get_parameter_source("database_url") is not ParameterSource.DEFAULT
        dialect = normalize_url(database_url).get_backend_name() if explicit else "postgresql"
    click.echo(migrations.sql(dialect, schema=schema), nl=False)


@cli.command()
@connection_options(
    database_help="Run on this database (migrated first) instead of SQLite in memory.",
    redis_help="Run on a RedisBroker there, with Redis events, instead of a StubBroker.",
    show_database_default=False,
)
@click.option(
    "--topic", default="solid-state batteries", show_default=True, help="What to research."
)
@click.option(
    "--step-seconds",
    type=click.FloatRange(0, 60),
    default=0.4,
    show_default=True,
    help="Roughly how long each step works, in seconds.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=60.0,
    show_default=True,
    help="Give up when no event comes for this many seconds.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show the worker's warnings in full.")
@click.pass_context
def demo(
    ctx: click.Context,
    database_url: str,
    redis_url: str | None,
    topic: str,
    step_seconds: float,
    timeout: float,
    verbose: bool,
) -> None:
    """Run the research-brief diamond with a worker in this process, live.

    fetch_sources -> summarize, keywords, credibility -> compile_brief

    Embedded by default (Dramatiq's StubBroker, SQLite in memory, in-memory events).
    With --redis-url it runs on a RedisBroker with Redis events; with --database-url
    (or BATON_DATABASE_URL) on that database, migrated first. Exits 1 unless the
    workflow completes.
    """
    from . import demo as demo_module  # the demo's actors load only for this command

    explicit_db = ctx.get_parameter_source("database_url") is not ParameterSource.DEFAULT
    db_url = database_url if explicit_db else None
    if redis_url:
        check_redis(redis_url)
    out = console()
    with demo_module.worker_logs(verbose), demo_module.open_setup(db_url, redis_url) as setup:
        out.print(f"Research brief demo on {setup.label}", style="bold", soft_wrap=True)
        progress = Progress(out, dt.datetime.now(dt.UTC))

        def start(workflow_id: str) -> None:
            out.print(f"workflow {workflow_id}  research:{topic}\n", soft_wrap=True)
            progress.since = dt.datetime.now(dt.UTC)

        result = demo_module.run(
            setup,
            topic=topic,
            step_seconds=step_seconds,
            timeout=timeout,
            on_start=start,
            on_event=progress.show,
        )
    if result.brief is not None:
        out.print("\ncompile_brief's result:", style="bold")
        out.print_json(json.dumps(result.brief))
    else:
        out.print(f"\nNo brief: the workflow ended {result.outcome}.", style="red")
    if db_url:
        out.print(
            f"\nSee it again: baton status {result.workflow_id} --database-url {_safe_url(db_url)}",
            soft_wrap=True,
        )
    if result.outcome != "completed":
        ctx.exit(1)


@cli.command("list")
@connection_options()
@click.option(
    "--state",
    type=click.Choice(["running", "completed", "failed", "cancelled"]),
    default=None,
    help="Only workflows in this state.",
)
@click.option("--name-prefix", default=None, help="Only workflows whose name starts with this.")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True)
def list_(
    database_url: str, redis_url: str | None, state: str | None, name_prefix: str | None, limit: int
) -> None:
    """List workflows, newest first."""
    store = open_store(database_url)
    views = baton.query.list_workflows(
        state, name_prefix, limit, store=store, broker=client_broker(store)
    )
    out = console()
    if not views:
        out.print("No workflows.")
        return
    failures = any(view.failed_steps for view in views)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("ID", no_wrap=True, min_width=max(len(view.id) for view in views))
    table.add_column("Name", overflow="fold", min_width=12)
    table.add_column("State", no_wrap=True, min_width=9)
    table.add_column("Inserted (UTC)", no_wrap=True)
    table.add_column("Took", no_wrap=True, justify="right")
    if failures:
        table.add_column("Failed steps", overflow="fold", style="red")
    for view in views:
        cells: list[str | Text] = [
            view.id,
            view.name,
            styled(view.state),
            when(view.inserted_at, "%m-%d %H:%M:%S"),
            took(view.inserted_at, view.finished_at),
        ]
        table.add_row(*cells, *([", ".join(view.failed_steps)] if failures else []))
    out.print(table)
    out.print(f"{len(views)} workflow{'s' * (len(views) != 1)}, newest first", style="dim")


@cli.command()
@connection_options()
@click.argument("workflow_id", metavar="ID")
def status(database_url: str, redis_url: str | None, workflow_id: str) -> None:
    """Show a workflow and each of its steps."""
    store = open_store(database_url)
    broker = client_broker(store)
    view = baton.query.get_workflow(workflow_id, store=store, broker=broker)
    steps = baton.query.get_workflow_steps(workflow_id, store=store, broker=broker)
    out = console()
    header = Table.grid(padding=(0, 2))
    header.add_row("Workflow", view.id)
    header.add_row("Name", view.name)
    header.add_row("State", styled(view.state))
    header.add_row("Inserted", when(view.inserted_at) + " UTC")
    if view.finished_at:
        after = took(view.inserted_at, view.finished_at)
        header.add_row("Finished", f"{when(view.finished_at)} UTC, after {after}")
    if view.failed_steps:
        header.add_row("Failed steps", Text(", ".join(view.failed_steps), style="red"))
    if view.parent_id:
        header.add_row("Parent", view.parent_id)
    out.print(header)
    errors = any(step.error for step in steps)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    longest = max(len(step.step_name) for step in steps)
    table.add_column("Step", overflow="fold", min_width=min(24, longest))
    table.add_column("State", no_wrap=True, min_width=9)
    table.add_column("Attempt", justify="right")
    table.add_column("Depends on", overflow="fold")
    table.add_column("Started (UTC)", no_wrap=True)
    table.add_column("Took", no_wrap=True, justify="right")
    if errors:
        table.add_column("Error", overflow="fold", style="red")
    for step in steps:
        cells: list[str | Text] = [
            step.step_name,
            styled(step.state),
            str(step.attempt),
            ", ".join(step.deps),
            when(step.started_at, "%H:%M:%S.%f")[:12],
            took(step.started_at, step.finished_at),
        ]
        table.add_row(*cells, *([step.error or ""] if errors else []))
    out.print(table)


@cli.command()
@connection_options()
@click.argument("workflow_id", metavar="ID")
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Give up after this many seconds without any change (default: never).",
)
@click.pass_context
def watch(
    ctx: click.Context,
    database_url: str,
    redis_url: str | None,
    workflow_id: str,
    timeout: float | None,
) -> None:
    """Show a workflow's progress live until it finishes.

    With --redis-url it listens to the workflow's events; without, it re-reads the
    store every 0.2 s. Exits 1 unless the workflow completes.
    """
    store = open_store(database_url)
    bus = open_bus(redis_url) if redis_url else None
    broker = client_broker(store)
    view = baton.query.get_workflow(workflow_id, store=store, broker=broker)  # WorkflowNotFound
    out = console()
    out.print(f"workflow {view.id}  {view.name}\n", soft_wrap=True)
    progress = Progress(out, view.inserted_at)
    if bus is not None:
        outcome = _watch_events(workflow_id, store, broker, bus, timeout, progress)
    else:
        outcome = _watch_store(workflow_id, store, broker, timeout, progress)
    if outcome != "completed":
        ctx.exit(1)


def _watch_events(
    workflow_id: str,
    store: baton.Store,
    broker: StubBroker,
    bus: baton.EventBus,
    timeout: float | None,
    progress: Progress,
) -> str | None:
    outcome = None
    # replay: first each step's current state from the store, then live events, re-reading
    # the store on any gap, so the view converges on the truth
    with baton.events.subscribe_workflow(
        workflow_id, timeout=timeout, replay=True, bus=bus, store=store, broker=broker
    ) as events:
        for event in events:
            progress.show(event)
            if event.event == WORKFLOW_FINISHED:
                outcome = event.payload.get("outcome")
    return outcome


def _watch_store(
    workflow_id: str,
    store: baton.Store,
    broker: StubBroker,
    timeout: float | None,
    progress: Progress,
) -> str:
    seen: dict[str, int] = {}
    last_change = time.monotonic()
    while True:
        # the workflow before its steps: once it reads finished, the steps read after are final
        view = baton.query.get_workflow(workflow_id, store=store, broker=broker)
        steps = baton.query.get_workflow_steps(workflow_id, store=store, broker=broker)
        moved = [step for step in steps if step.version > seen.get(step.step_name, 0)]
        # several moves between two reads: show them in the order they happened
        for step in sorted(moved, key=lambda s: s.finished_at or s.started_at or s.inserted_at):
            seen[step.step_name] = step.version
            last_change = time.monotonic()
            progress.show(Event(STEP_UPDATED, step.payload(view)))
        if view.outcome is not None:
            progress.show(finished_event(view))
            return view.outcome
        if timeout is not None and time.monotonic() - last_change > timeout:
            raise baton.WaitTimeout(f"Workflow {workflow_id} did not change for {timeout} s")
        time.sleep(POLL_SECONDS)


@cli.command()
@connection_options()
@click.argument("workflow_id", metavar="ID")
def cancel(database_url: str, redis_url: str | None, workflow_id: str) -> None:
    """Cancel every step of a workflow that has not finished."""
    store = open_store(database_url)
    broker = client_broker(store, open_bus(redis_url) if redis_url else None)
    run = baton.WorkflowRun.get(workflow_id, store=store, broker=broker)
    before = run.status()
    if before != "running":
        click.echo(f"Workflow {run.id} ({run.name}) had already finished: {before}.")
        return
    run.cancel()
    click.echo(f"Workflow {run.id} ({run.name}): {run.status()}")


__all__ = ["cli", "main"]
