"""Bare Dramatiq: the same no-op actor on the same RedisBroker, no workflow layer.

Worker process: ``python -m bench.contenders.bare_app``. The reference of the overhead
scenario: messages are sent one by one, and the run ends when the queue holds no
message, queued or in flight (``RedisBroker.join``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import dramatiq

from ..config import AppConfig, Settings
from ..services import Services
from ..workers import Workers, serve_dramatiq
from . import app_config
from .dramatiq_common import redis_broker

MODULE = "bench.contenders.bare_app"
NAME = "bare Dramatiq"


class App:
    def __init__(self, cfg: AppConfig) -> None:
        self.broker = redis_broker(cfg)

        @dramatiq.actor(broker=self.broker)
        def noop() -> None:
            return None

        self.noop = noop


class Client:
    name = NAME

    def __init__(self, app: App, workers: Workers) -> None:
        self.app, self.workers = app, workers

    def run_messages(self, count: int, timeout: float) -> float:
        """Send `count` no-op messages; seconds until all were processed."""
        start = time.time()
        for _ in range(count):
            self.app.noop.send()
        self.app.broker.join(self.app.noop.queue_name, interval=2, timeout=int(timeout * 1000))
        return time.time() - start


@contextlib.contextmanager
def running(services: Services, settings: Settings) -> Iterator[Client]:
    with services.environment(database=False) as env:
        cfg = app_config(settings, env)
        app = App(cfg)
        try:
            with Workers(MODULE, cfg.to_env(), count=settings.processes, label="bare") as workers:
                yield Client(app, workers)
        finally:
            app.broker.close()


def main() -> None:
    cfg = AppConfig.from_env()
    app = App(cfg)
    serve_dramatiq(app.broker, threads=cfg.threads, worker_timeout_ms=cfg.worker_timeout_ms)
    app.broker.close()


if __name__ == "__main__":
    main()
