"""A workflow worker inside the test's own process, on the test's broker."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import dramatiq

import baton_dramatiq as baton


@contextlib.contextmanager
def workflow_worker(
    broker: dramatiq.Broker, folder: Path, *, threads: int, worker_timeout: int
) -> Iterator[tuple[baton.Store, dramatiq.Worker]]:
    """A started `dramatiq.Worker` on `broker`, with `WorkflowMiddleware` over a new
    SQLite store in `folder`; on exit the worker is stopped, then the store disposed."""
    store = baton.Store(f"sqlite:///{folder / 'baton.db'}")
    baton.migrations.upgrade(store)
    broker.add_middleware(baton.WorkflowMiddleware(store))
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=worker_timeout)
    worker.start()
    try:
        yield store, worker
    finally:
        worker.stop(timeout=5000)
        store.dispose()
