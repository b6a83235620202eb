"""Celery canvas on Redis: ``chain(fetch_sources, chord([3 middle steps], compile_brief))``.

Worker process: ``python -m bench.contenders.celery_app`` runs ``celery worker`` with the
pool from BENCH_CELERY_POOL (prefork by default, Celery's own default) and concurrency
BENCH_THREADS. Broker and result backend are the same Redis, every key under the
contender's namespace (``global_keyprefix``). Results are passed as Celery passes them:
fetch_sources' return value is the middle steps' argument, and the chord hands the list
of their results to compile_brief. Other settings are Celery's defaults (early ack,
prefetch multiplier 4); gossip, mingle, heartbeats and remote control are off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from celery import Celery, chain, chord
from celery.signals import worker_ready

from ..board import Board
from ..config import AppConfig, Settings
from ..services import Services
from ..workers import Workers
from . import MIDDLE_STEPS, app_config

MODULE = "bench.contenders.celery_app"


class App:
    def __init__(self, cfg: AppConfig) -> None:
        self.cfg = cfg
        self.queue = f"{cfg.namespace}.q"
        prefix = {"global_keyprefix": f"{cfg.namespace}:"}
        self.celery = app = Celery("bench", broker=cfg.redis_url, backend=cfg.redis_url)
        app.conf.update(
            broker_transport_options=prefix,
            result_backend_transport_options=prefix,
            task_default_queue=self.queue,
            result_expires=3600,
            worker_redirect_stdouts=False,
            worker_hijack_root_logger=False,
            worker_enable_remote_control=False,
            broker_connection_retry_on_startup=True,
        )
        self.board = board = Board(cfg.redis_url, cfg.namespace)

        @app.task(name="fetch_sources")
        def fetch_sources(key: str) -> dict[str, Any]:
            return {"topic": key}

        def make_middle(name: str) -> Any:
            @app.task(name=name)
            def middle(source: dict[str, Any]) -> dict[str, Any]:
                return {"ok": True}

            return middle

        self.middles = [make_middle(name) for name in MIDDLE_STEPS]

        @app.task(name="compile_brief")
        def compile_brief(parts: list[Any], key: str) -> dict[str, Any]:
            board.record(key)
            return {"parts": len(parts)}

        self.fetch_sources, self.compile_brief = fetch_sources, compile_brief

    def submit_diamond(self, key: str) -> None:
        header = [m.s() for m in self.middles]
        chain(self.fetch_sources.s(key), chord(header, self.compile_brief.s(key))).apply_async()

    def close(self) -> None:
        self.board.close()
        self.celery.close()


class Client:
    results_note = "yes (chain + chord arguments)"

    def __init__(self, app: App, workers: Workers, pool: str) -> None:
        self.app, self.workers = app, workers
        self.board = app.board
        self.name = f"Celery canvas ({pool})"

    def submit_diamond(self, key: str) -> None:
        self.app.submit_diamond(key)


@contextlib.contextmanager
def running(services: Services, settings: Settings) -> Iterator[Client]:
    with services.environment(database=False) as env:
        cfg = app_config(settings, env)
        app = App(cfg)
        try:
            with Workers(MODULE, cfg.to_env(), count=settings.processes, label="celery") as workers:
                yield Client(app, workers, settings.celery_pool)
        finally:
            app.close()


def main() -> None:
    cfg = AppConfig.from_env()
    app = App(cfg)

    def ready(**_: Any) -> None:
        print("ready", flush=True)

    worker_ready.connect(ready, weak=False)

    app.celery.worker_main(
        [
            "worker",
            f"--pool={cfg.celery_pool}",
            f"--concurrency={cfg.threads}",
            f"--queues={app.queue}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=WARNING",
        ]
    )


if __name__ == "__main__":
    main()
