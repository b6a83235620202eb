"""A running workflow system for one test: store, broker, bus, actors and workers.

Two kinds, one interface, so the same tests run on both:
  embedded  SQLite file + StubBroker + MemoryEventBus + a worker in this process
  postgres  PostgreSQL + RedisBroker + RedisEventBus + worker processes
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO

import baton_dramatiq as baton

from . import services
from .actors import declare

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


class Cluster:
    kind: str
    broker: dramatiq.Broker
    store: baton.Store
    events: baton.EventBus
    actors: types.SimpleNamespace

    def runs(self, workflow_id: str) -> list[str]:
        """The step bodies that ran for a workflow, in order, one entry per execution."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class EmbeddedCluster(Cluster):
    kind = "embedded"

    def __init__(self, tmp_path: Path, threads: int = 8) -> None:
        self._runs: dict[str, list[str]] = collections.defaultdict(list)
        self._lock = threading.Lock()
        self.store = baton.Store(f"sqlite:///{tmp_path / 'baton.db'}")
        baton.migrations.upgrade(self.store)
        self.events = baton.MemoryEventBus()
        self.broker = StubBroker()
        self.broker.emit_after("process_boot")
        self.broker.add_middleware(AsyncIO())
        self.middleware = baton.WorkflowMiddleware(self.store, events=self.events, claim_timeout=3)
        self.broker.add_middleware(self.middleware)
        dramatiq.set_broker(self.broker)
        self.actors = declare(self.broker, self._record)
        self.worker = dramatiq.Worker(self.broker, worker_threads=threads, worker_timeout=20)
        self.worker.start()

    def _record(self, workflow_id: str, step_name: str) -> None:
        with self._lock:
            self._runs[workflow_id].append(step_name)

    def runs(self, workflow_id: str) -> list[str]:
        with self._lock:
            return list(self._runs[workflow_id])

    def close(self) -> None:
        self.worker.stop()
        self.broker.close()
        self.store.dispose()


class PostgresCluster(Cluster):
    kind = "postgres"

    def __init__(self, *, processes: int = 2, threads: int = 4, **worker_env: str) -> None:
        self.db_name = services.create_database()
        self.database_url = services.db_url(self.db_name)
        self.namespace = services.new_namespace()
        self.env = dict(
            os.environ,
            BATON_TEST_DATABASE_URL=self.database_url,
            BATON_TEST_REDIS_URL=services.REDIS_URL,
            BATON_TEST_NAMESPACE=self.namespace,
        )
        self.store = baton.Store(self.database_url)
        self.events = baton.RedisEventBus(services.REDIS_URL, prefix=self.namespace + ":")
        self.broker = RedisBroker(url=services.REDIS_URL, namespace=self.namespace)
        self.broker.add_middleware(AsyncIO())
        self.middleware = baton.WorkflowMiddleware(self.store, events=self.events)
        self.broker.add_middleware(self.middleware)
        dramatiq.set_broker(self.broker)
        self.actors = declare(self.broker, lambda *_: None)
        self.redis = redis.Redis.from_url(services.REDIS_URL)
        self.threads = threads
        self.workers: list[subprocess.Popen[str]] = []
        for _ in range(processes):
            self.start_worker(**worker_env)
        for proc in self.workers:
            self._await_ready(proc)

    def start_worker(self, *, wait: bool = False, **env: str) -> subprocess.Popen[str]:
        """Start one more worker process; `env` adds BATON_TEST_* settings (sweeper, faults)."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.worker_app", str(self.threads)],
            cwd=ROOT,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            text=True,
        )
        self.workers.append(proc)
        if wait:
            self._await_ready(proc)
        return proc

    @staticmethod
    def _await_ready(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            raise RuntimeError(f"worker did not start (exit {proc.wait()}): {line!r}")

    def runs(self, workflow_id: str) -> list[str]:
        key = f"{self.namespace}:runs:{workflow_id}"
        return [item.decode() for item in self.redis.lrange(key, 0, -1)]

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.broker.close()
        self.events.close()
        self.store.dispose()
        self.redis.close()
        services.drop_database(self.db_name)
        services.drop_namespace(self.namespace)
