"""The `dramatiq-workflow` package: ``Chain(fetch, Group(3 middle steps), compile)``.

Worker process: ``python -m bench.contenders.dqw_app``. dramatiq-workflow cannot pass
results between steps, so there are two variants:

- plain (the row of the diamond table): no results at all; steps return None (a value would only
  be discarded, with a warning per message). The table says "no".
- ``BENCH_DQW_RESULTS=1``, a Results side channel: every step stores its result in
  Dramatiq's Redis result backend and the steps downstream read them by message id,
  which the submitter knows because it builds the messages before the workflow.
  `Results` is added after dramatiq-workflow's middleware so that (after-hooks running
  in reverse order) a result is stored before the next stage is enqueued; the reads
  block anyway.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import dramatiq
from dramatiq.results import Results

from ..board import Board
from ..config import AppConfig, Settings
from ..services import Services
from ..workers import Workers, serve_dramatiq
from . import MIDDLE_STEPS, app_config
from .dramatiq_common import rate_limiter_backend, redis_broker, result_of, results_backend

MODULE = "bench.contenders.dqw_app"
RESULTS_ENV = "BENCH_DQW_RESULTS"


class App:
    def __init__(self, cfg: AppConfig, *, with_results: bool) -> None:
        self.with_results = with_results
        self.broker = broker = redis_broker(cfg)
        dramatiq.set_broker(broker)
        import dramatiq_workflow as dw  # imported late: it declares an actor on the global broker

        self.dw = dw
        broker.add_middleware(dw.WorkflowMiddleware(rate_limiter_backend(cfg)))
        self.results = backend = results_backend(cfg)
        if with_results:
            broker.add_middleware(Results(backend=backend))
        self.board = board = Board(cfg.redis_url, cfg.namespace)
        store = {"store_results": True} if with_results else {}

        @dramatiq.actor(broker=broker, **store)
        def fetch_sources(key: str) -> dict[str, Any] | None:
            return {"topic": key} if with_results else None

        def middle(source_id: str | None = None) -> dict[str, Any] | None:
            if source_id is None:
                return None
            result_of(backend, "fetch_sources", source_id)
            return {"ok": True}

        middles = [
            dramatiq.actor(middle, broker=broker, actor_name=name, **store) for name in MIDDLE_STEPS
        ]

        @dramatiq.actor(broker=broker, **store)
        def compile_brief(key: str, parts: list[list[str]] | None = None) -> dict[str, Any] | None:
            if parts is None:
                board.record(key)
                return None
            read = [result_of(backend, actor_name, message_id) for actor_name, message_id in parts]
            board.record(key)
            return {"parts": len(read)}

        self.fetch_sources, self.middles, self.compile_brief = fetch_sources, middles, compile_brief

    def workflow(self, key: str) -> Any:
        dw = self.dw
        fetch = self.fetch_sources.message(key)
        if not self.with_results:
            middles = [actor.message() for actor in self.middles]
            fan_in = self.compile_brief.message(key)
        else:
            middles = [actor.message(fetch.message_id) for actor in self.middles]
            parts = [[m.actor_name, m.message_id] for m in middles]
            fan_in = self.compile_brief.message(key, parts)
        return dw.Workflow(dw.Chain(fetch, dw.Group(*middles), fan_in), broker=self.broker)

    def close(self) -> None:
        self.broker.close()
        self.board.close()


class Client:
    def __init__(self, app: App, workers: Workers) -> None:
        self.app, self.workers = app, workers
        self.board = app.board
        if app.with_results:
            self.name = "dramatiq-workflow + Results side channel"
            self.results_note = "yes (side channel: Results backend, read by message id)"
        else:
            self.name = "dramatiq-workflow"
            self.results_note = "**no** (not supported)"

    def submit_diamond(self, key: str) -> None:
        self.app.workflow(key).run()


@contextlib.contextmanager
def running(
    services: Services, settings: Settings, *, with_results: bool = False
) -> Iterator[Client]:
    with services.environment(database=False) as env:
        cfg = app_config(settings, env)
        app = App(cfg, with_results=with_results)
        env_vars = dict(cfg.to_env(), **{RESULTS_ENV: "1" if with_results else ""})
        label = "dqw-results" if with_results else "dqw"
        try:
            with Workers(MODULE, env_vars, count=settings.processes, label=label) as workers:
                yield Client(app, workers)
        finally:
            app.close()


def main() -> None:
    cfg = AppConfig.from_env()
    app = App(cfg, with_results=bool(os.environ.get(RESULTS_ENV)))
    serve_dramatiq(app.broker, threads=cfg.threads, worker_timeout_ms=cfg.worker_timeout_ms)
    app.close()


if __name__ == "__main__":
    main()
