"""Dramatiq's own tools: a group with a completion callback, results in the Results backend.

Worker process: ``python -m bench.contenders.group_app``. Dramatiq cannot pipe one message
into a group, so ``fetch_sources`` starts the group of the three middle steps itself
(passing its result as their argument) with ``compile_brief`` as the group's completion
callback; ``compile_brief`` reads the three results from the Redis result backend.

Middleware order matters: after-hooks run in reverse order of the middleware list, so
`Results` is added after `GroupCallbacks` to store a result before the callback that
reads it is enqueued.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import dramatiq
from dramatiq.middleware import GroupCallbacks
from dramatiq.results import Results

from ..board import Board
from ..config import AppConfig, Settings
from ..services import Services
from ..workers import Workers, serve_dramatiq
from . import MIDDLE_STEPS, app_config
from .dramatiq_common import rate_limiter_backend, redis_broker, result_of, results_backend

MODULE = "bench.contenders.group_app"
NAME = "Dramatiq group + callback + Results"


class App:
    def __init__(self, cfg: AppConfig) -> None:
        self.broker = broker = redis_broker(cfg)
        self.results = backend = results_backend(cfg)
        broker.add_middleware(GroupCallbacks(rate_limiter_backend(cfg)))
        broker.add_middleware(Results(backend=backend))
        self.board = board = Board(cfg.redis_url, cfg.namespace)

        def middle(source: dict[str, Any]) -> dict[str, Any]:
            return {"ok": True}

        middles = [
            dramatiq.actor(middle, broker=broker, actor_name=name, store_results=True)
            for name in MIDDLE_STEPS
        ]

        @dramatiq.actor(broker=broker, store_results=True)
        def compile_brief(key: str, parts: list[list[str]]) -> dict[str, Any]:
            read = [result_of(backend, actor_name, message_id) for actor_name, message_id in parts]
            board.record(key)
            return {"parts": len(read)}

        @dramatiq.actor(broker=broker, store_results=True)
        def fetch_sources(key: str) -> dict[str, Any]:
            result = {"topic": key}
            children = [actor.message(result) for actor in middles]
            group = dramatiq.group(children, broker=broker)
            parts = [[m.actor_name, m.message_id] for m in children]
            group.add_completion_callback(compile_brief.message(key, parts))
            group.run()
            return result

        self.fetch_sources = fetch_sources

    def close(self) -> None:
        self.broker.close()
        self.board.close()


class Client:
    name = NAME
    results_note = "yes (Results backend)"

    def __init__(self, app: App, workers: Workers) -> None:
        self.app, self.workers = app, workers
        self.board = app.board

    def submit_diamond(self, key: str) -> None:
        self.app.fetch_sources.send(key)


@contextlib.contextmanager
def running(services: Services, settings: Settings) -> Iterator[Client]:
    with services.environment(database=False) as env:
        cfg = app_config(settings, env)
        app = App(cfg)
        try:
            with Workers(MODULE, cfg.to_env(), count=settings.processes, label="group") as workers:
                yield Client(app, workers)
        finally:
            app.close()


def main() -> None:
    cfg = AppConfig.from_env()
    app = App(cfg)
    serve_dramatiq(app.broker, threads=cfg.threads, worker_timeout_ms=cfg.worker_timeout_ms)
    app.close()


if __name__ == "__main__":
    main()
