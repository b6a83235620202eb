"""`baton prune`: one sweep with pruning, from the command line."""

from __future__ import annotations

import click

import baton_dramatiq as baton

from .connect import connection_options, open_bus, open_store
from .render import console


@click.command("prune")
@connection_options(redis_help="Redis, to publish finishes a crash left unpublished.")
@click.option(
    "--max-age",
    type=click.FloatRange(min=0, min_open=True),
    default=86400.0,
    show_default=True,
    help="Delete workflows that finished more than this many seconds ago.",
)
@click.option(
    "--debug-log-max-age",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Also delete LLM debug logs older than this many seconds.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Rows per transaction.",
)
def prune(
    database_url: str,
    redis_url: str | None,
    max_age: float,
    debug_log_max_age: float | None,
    batch_size: int,
) -> None:
    """Delete old finished workflows (never a running one) and report the counts."""
    store = open_store(database_url)
    bus = open_bus(redis_url) if redis_url else None
    sweeper = baton.Sweeper(
        store,
        prune=True,
        max_age=max_age,
        debug_log_max_age=debug_log_max_age,
        batch_size=batch_size,
    )
    report = sweeper.sweep_once(bus=bus, rescue=False)
    if not report.ran:
        raise click.ClickException("Another process is sweeping right now; try again shortly.")
    out = console()
    took = (report.finished_at - report.started_at).total_seconds()
    out.print(
        f"pruned {report.pruned_workflows} workflows ({report.pruned_rows} rows) "
        f"in {report.transactions} transactions, {took:.2f} s"
    )
    if debug_log_max_age is not None:
        out.print(f"deleted {report.pruned_debug_logs} debug logs")
    if bus is not None:
        out.print(f"published {report.published} missing workflow_finished events")
