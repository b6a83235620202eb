"""Bare Dramatiq: the same no-op actor on the same RedisBroker, no workflow layer.

Worker process: ``python -m bench.contenders.bare_app``. The reference of the overhead
scenario: messages are sent one by one, and the run ends when the queue holds no
message, queued or in flight (``RedisBroker.join``). For the fan-in scenario, the hop
from one actor to the next: ``hop_from`` ends by sending ``hop_to``, which records how
long after that send it started; the idle scenario sends ``hop_to`` itself.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import dramatiq
import redis

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

        hops = f"{cfg.namespace}:bench:hops"
        client = redis.Redis.from_url(cfg.redis_url)

        @dramatiq.actor(broker=self.broker)
        def hop_to(key: str, sent_at: float) -> None:
            client.hset(hops, key, repr(time.time() - sent_at))

        @dramatiq.actor(broker=self.broker)
        def hop_from(key: str) -> None:
            hop_to.send(key, time.time())

        self.noop, self.hop_from, self.hop_to = noop, hop_from, hop_to
        self.hops, self.redis = hops, client

    def close(self) -> None:
        self.broker.close()
        self.redis.close()


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

    def run_hops(self, count: int, interval: float, timeout: float) -> list[float]:
        """`count` actor-to-actor hops, one every `interval` s; their latencies (s)."""
        start = time.monotonic()
        for i in range(count):
            pause = start + i * interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            self.app.hop_from.send(f"h{i}")
        self._await_hops(count, timeout)
        return [float(v) for v in self.app.redis.hvals(self.app.hops)]

    def run_after_idle(self, count: int, idle_s: float, timeout: float) -> list[float]:
        """`count` messages, each sent after `idle_s` s of idleness; seconds from each
        send to its body's start."""
        self.app.redis.delete(self.app.hops)
        for i in range(count):
            time.sleep(idle_s)
            self.app.hop_to.send(f"idle{i}", time.time())
            self._await_hops(i + 1, timeout)
        return [float(v) for v in self.app.redis.hvals(self.app.hops)]

    def _await_hops(self, count: int, timeout: float) -> None:
        """Wait until `count` hops are recorded; fail after `timeout` s or if a worker died."""
        deadline = time.monotonic() + timeout
        while self.app.redis.hlen(self.app.hops) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"bare hops: not all {count} arrived within {timeout:.0f} s")
            self.workers.check_alive()
            time.sleep(0.01)


@contextlib.contextmanager
def running(services: Services, settings: Settings) -> Iterator[Client]:
    with services.environment(database=False) as env:
        cfg = app_config(settings, env)
        app = App(cfg)
        try:
            with Workers(MODULE, cfg.to_env(), count=settings.processes, label="bare") as workers:
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
