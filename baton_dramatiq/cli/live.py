"""The commands that follow a workflow as it runs: demo and watch."""

from __future__ import annotations

import datetime as dt
import json
import time

import click
from click.core import ParameterSource
from dramatiq.brokers.stub import StubBroker

import baton_dramatiq as baton

from ..events import STEP_UPDATED, WORKFLOW_FINISHED, Event
from ..query import finished_event
from .connect import check_redis, client_broker, connection_options, open_bus, open_store, safe_url
from .render import Progress, console

#: how often `watch` re-reads the store when it has no Redis to listen to, in seconds
POLL_SECONDS = 0.2


@click.command()
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
    from .. import demo as demo_module  # the demo's actors load only for this command

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
            f"\nSee it again: baton status {result.workflow_id} --database-url {safe_url(db_url)}",
            soft_wrap=True,
        )
    if result.outcome != "completed":
        ctx.exit(1)


@click.command()
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
