"""Test doubles for applications: an embedded setup and an in-process worker.

from baton_dramatiq.testing import embedded, worker

setup = embedded()                 # StubBroker + SQLite in memory + MemoryEventBus
with worker(setup.broker):
    run = workflow.insert()
    assert run.wait(timeout=10) == "completed"
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import dramatiq
from dramatiq.brokers.stub import StubBroker

from . import migrations
from .events import EventBus, MemoryEventBus
from .middleware import WorkflowMiddleware
from .store import Store


@dataclasses.dataclass(frozen=True)
class Embedded:
    broker: dramatiq.Broker
    store: Store
    events: EventBus
    middleware: WorkflowMiddleware


def embedded(
    database_url: str = "sqlite://",
    *,
    events: EventBus | None = None,
    set_global: bool = True,
    **middleware_options: object,
) -> Embedded:
    """A StubBroker with a WorkflowMiddleware on a migrated store, set as the global broker."""
    store = Store(database_url)
    migrations.upgrade(store)
    bus = events if events is not None else MemoryEventBus()
    broker = StubBroker()
    broker.emit_after("process_boot")
    middleware = WorkflowMiddleware(store, events=bus, **middleware_options)  # type: ignore[arg-type]
    broker.add_middleware(middleware)
    if set_global:
        dramatiq.set_broker(broker)
    return Embedded(broker=broker, store=store, events=bus, middleware=middleware)


@contextlib.contextmanager
def worker(
    broker: dramatiq.Broker, *, threads: int = 4, worker_timeout: int = 20
) -> Iterator[dramatiq.Worker]:
    """A Dramatiq worker running in this process for the duration of the block."""
    w = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=worker_timeout)
    w.start()
    try:
        yield w
    finally:
        w.stop()
