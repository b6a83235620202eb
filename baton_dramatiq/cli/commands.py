"""The commands that act once and return: migrate, schema-sql, list, status, cancel."""

from __future__ import annotations

import click
from click.core import ParameterSource
from rich import box
from rich.table import Table
from rich.text import Text

import baton_dramatiq as baton

from .. import migrations
from ..store.engine import normalize_url
from .connect import client_broker, connection_options, open_bus, open_store
from .render import console, styled, took, when


@click.command()
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


@click.command("schema-sql")
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


@click.command("list")
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


@click.command()
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


@click.command()
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
    spent = run.cancel()
    click.echo(f"Workflow {run.id} ({run.name}): {run.status()}")
    if spent.calls or spent.cached_calls:
        click.echo(
            f"LLM calls so far: ${spent.total_cost_usd:,.6f} for {spent.calls} paid "
            f"call{'s' * (spent.calls != 1)} (see `baton cost {run.id}`)"
        )
