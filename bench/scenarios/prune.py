"""Pruning: delete 100,000 finished steps while a client keeps writing.

In a fresh database: workflows of 5,000 steps each, recorded as finished two days ago,
and one running workflow. A Sweeper prunes with its defaults (1,000 rows per
transaction) while a second connection updates the running workflow's step every 5 ms;
its slowest update shows how long the pruning held it up (it never should: every
statement of a sweep touches a bounded number of rows, none of them a running
workflow's). On request only: ``python -m bench --only prune``.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import dramatiq
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker

import baton_dramatiq as baton

from ..config import Settings
from ..services import Services

NAME = "prune"
PER_WORKFLOW = 5_000


def run(services: Services, settings: Settings) -> dict[str, Any]:
    steps = 10_000 if settings.quick else 100_000
    with services.environment(database=True) as env:
        store = baton.Store(env.database_url)
        broker = StubBroker()
        broker.add_middleware(baton.WorkflowMiddleware(store))
        noop = baton.workflow_actor(broker=broker, actor_name="prune_noop")(lambda i: i)
        try:
            live_id = _fill(store, broker, noop, steps)
            writes, slowest = _Writer(store, live_id), 0.0
            writes.start()
            start = time.perf_counter()
            report = baton.Sweeper(store, prune=True, max_age=86400).sweep_once(
                broker, rescue=False
            )
            took = time.perf_counter() - start
            slowest = writes.stop()
            assert baton.query.get_workflow(live_id, store=store).state == "running"
        finally:
            store.dispose()
            broker.close()
    return {
        "steps": steps,
        "workflows": report.pruned_workflows,
        "rows": report.pruned_rows,
        "transactions": report.transactions,
        "seconds": took,
        "concurrent_writes": writes.count,
        "slowest_concurrent_write_ms": 1000 * slowest,
    }


def _fill(store: baton.Store, broker: dramatiq.Broker, noop: Any, steps: int) -> str:
    finished_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    for w in range(steps // PER_WORKFLOW):
        wf = baton.Workflow(name=f"old:{w}")
        for i in range(PER_WORKFLOW):
            wf.add(f"s{i}", noop.message(i))
        store.insert_workflow(*wf._rows(wf.validate(broker)))
        with store.connect() as conn:
            conn.execute(
                sa.insert(store.completions).values(
                    workflow_id=wf.id, outcome="completed", failed_steps=[], finished_at=finished_at
                )
            )
    live = baton.Workflow(name="running").add("a", noop.message(0))
    store.insert_workflow(*live._rows(live.validate(broker)))
    return live.id


class _Writer(threading.Thread):
    """Updates a running workflow's step every 5 ms; remembers the slowest update."""

    def __init__(self, store: baton.Store, workflow_id: str) -> None:
        super().__init__(daemon=True)
        self.store, self.workflow_id = store, workflow_id
        self.count, self.slowest = 0, 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        n = self.store.nodes
        stmt = sa.update(n).where(n.c.workflow_id == self.workflow_id).values(version=n.c.version)
        while not self._stop_event.is_set():
            start = time.perf_counter()
            with self.store.connect() as conn:
                conn.execute(stmt)
            self.slowest = max(self.slowest, time.perf_counter() - start)
            self.count += 1
            time.sleep(0.005)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return self.slowest
