"""baton_dramatiq: PostgreSQL store + RedisBroker + RedisEventBus, as deployed.

Worker process: ``python -m bench.contenders.baton_app`` (settings from BENCH_*).
Results reach the fan-in step through the store: middle steps call
``baton.get_result("fetch_sources")``, the fan-in step ``baton.get_all_results()``.
"""

from __future__ import annotations

import contextlib
import os
import time
import types
from collections.abc import Iterator
from typing import Any, NamedTuple

import dramatiq

import baton_dramatiq as baton

from ..board import Board
from ..config import AppConfig, Settings
from ..services import Env, Services
from ..workers import Workers, serve_dramatiq
from . import MIDDLE_STEPS, app_config
from .dramatiq_common import redis_broker

MODULE = "bench.contenders.baton_app"
NAME = "baton_dramatiq"
#: how often `Client.run_to_finish` reads whether the workflow finished, in seconds
FINISH_POLL_S = 0.02


class App:
    """Broker, store, event bus and actors of one baton deployment."""

    def __init__(self, cfg: AppConfig) -> None:
        self.cfg = cfg
        self.broker = redis_broker(cfg)
        self.store = baton.Store(cfg.database_url)
        self.events = baton.RedisEventBus(cfg.redis_url, prefix=cfg.namespace + ":")
        self.broker.add_middleware(baton.WorkflowMiddleware(self.store, events=self.events))
        self.board = Board(cfg.redis_url, cfg.namespace)
        self.actors = declare(self.broker, self.board)

    def close(self) -> None:
        self.broker.close()
        self.events.close()
        self.store.dispose()
        self.board.close()


def declare(broker: dramatiq.Broker, board: Board) -> types.SimpleNamespace:
    """The no-op actors, declared on `broker`."""

    @baton.workflow_actor(broker=broker)
    def noop() -> None:
        return None

    @baton.workflow_actor(broker=broker)
    def fetch_sources(key: str) -> dict[str, Any]:
        return {"topic": key}

    def middle() -> dict[str, Any]:
        baton.get_result("fetch_sources")
        return {"ok": True}

    middles = {
        name: baton.workflow_actor(broker=broker, actor_name=name)(middle) for name in MIDDLE_STEPS
    }

    @baton.workflow_actor(broker=broker)
    def compile_brief(key: str) -> dict[str, Any]:
        parts = baton.get_all_results()
        board.record(key)
        return {"parts": len(parts)}

    return types.SimpleNamespace(
        noop=noop, fetch_sources=fetch_sources, compile_brief=compile_brief, **middles
    )


# -- workflows -------------------------------------------------------------------------


def diamond(actors: types.SimpleNamespace, key: str) -> baton.Workflow:
    wf = baton.Workflow(name=f"brief:{key}")
    wf.add("fetch_sources", actors.fetch_sources.message(key))
    for name in MIDDLE_STEPS:
        wf.add(name, getattr(actors, name).message(), deps=["fetch_sources"])
    wf.add("compile_brief", actors.compile_brief.message(key), deps=list(MIDDLE_STEPS))
    return wf


def wide(actors: types.SimpleNamespace, steps: int) -> baton.Workflow:
    """1 -> (steps - 2) -> 1 of no-op steps."""
    width = steps - 2
    wf = baton.Workflow(name=f"wide:{steps}")
    wf.add("start", actors.noop.message())
    names = [f"n{i}" for i in range(width)]
    for name in names:
        wf.add(name, actors.noop.message(), deps=["start"])
    wf.add("end", actors.noop.message(), deps=names)
    return wf


def chain(actors: types.SimpleNamespace, steps: int) -> baton.Workflow:
    """`steps` no-op steps, each depending on the one before."""
    wf = baton.Workflow(name=f"chain:{steps}")
    wf.add("s0", actors.noop.message())
    for i in range(1, steps):
        wf.add(f"s{i}", actors.noop.message(), deps=[f"s{i - 1}"])
    return wf


# -- client side -----------------------------------------------------------------------


class Client:
    name = NAME
    results_note = "yes (store)"

    def __init__(self, app: App, env: Env, workers: Workers) -> None:
        self.app, self.env, self.workers = app, env, workers
        self.board = app.board
        self.actors = app.actors
        self.store = app.store
        self.runs: dict[str, baton.WorkflowRun] = {}

    def submit_diamond(self, key: str) -> None:
        self.runs[key] = diamond(self.actors, key).insert(broker=self.app.broker, store=self.store)

    def insert(self, wf: baton.Workflow) -> baton.WorkflowRun:
        return wf.insert(broker=self.app.broker, store=self.store)

    def run_to_finish(self, wf: baton.Workflow, timeout: float) -> Finish:
        """Insert `wf` and wait for its finish.

        Reads the workflow's row every `FINISH_POLL_S` seconds. The run's time comes from
        the finish the store stamped, so the reads only need to notice it: a subscriber
        to the workflow's topic would instead receive and decode every event of every
        step, and its CPU and Redis's deliveries would be taken from the workers on the
        same cores. On timeout the workflow is cancelled and TimeoutError raised.
        """
        started_at = time.time()
        run = self.insert(wf)
        inserted_at = time.time()
        deadline = time.monotonic() + timeout
        while True:
            time.sleep(FINISH_POLL_S)
            view = baton.query.get_workflow(run.id, store=self.store)
            if view.outcome is not None:
                return Finish(started_at, inserted_at, view)
            if time.monotonic() > deadline:
                run.cancel()
                raise TimeoutError(f"workflow {run.name} still running after {timeout:.0f} s")
            self.workers.check_alive()


class Finish(NamedTuple):
    """A workflow run by `Client.run_to_finish`: when its insert began and returned (epoch
    seconds), and its view once finished (`finished_at` stamped by the store)."""

    started_at: float
    inserted_at: float
    view: baton.WorkflowView

    @property
    def seconds(self) -> float:
        """From the insert's start to the finish."""
        return self._finished() - self.started_at

    @property
    def seconds_after_insert(self) -> float:
        """From the moment the insert returned to the finish."""
        return self._finished() - self.inserted_at

    def _finished(self) -> float:
        assert self.view.finished_at is not None
        return self.view.finished_at.timestamp()


@contextlib.contextmanager
def running(
    services: Services,
    settings: Settings,
    *,
    label: str = "baton",
    extra_env: dict[str, str] | None = None,
) -> Iterator[Client]:
    """A fresh database and namespace, `settings.processes` workers; yields a Client."""
    with services.environment(database=True) as env:
        cfg = app_config(settings, env)
        app = App(cfg)
        dramatiq.set_broker(app.broker)  # Workflow.add checks actors against the global broker
        worker_env = dict(cfg.to_env(), **(extra_env or {}))
        try:
            with Workers(MODULE, worker_env, count=settings.processes, label=label) as workers:
                yield Client(app, env, workers)
        finally:
            app.close()


def main() -> None:
    cfg = AppConfig.from_env()
    app = App(cfg)
    dramatiq.set_broker(app.broker)
    if os.environ.get("BENCH_COUNT_SQL"):  # the profile scenario's counters
        from ..profiling import count_redis, count_sql

        count_sql(app.store, os.environ["BENCH_COUNT_SQL"])
        count_redis(os.environ["BENCH_COUNT_REDIS"])
    serve_dramatiq(app.broker, threads=cfg.threads, worker_timeout_ms=cfg.worker_timeout_ms)
    app.close()


if __name__ == "__main__":
    main()
