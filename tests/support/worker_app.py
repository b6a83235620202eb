"""A worker application configured from the environment, as a real deployment is.

    BATON_TEST_DATABASE_URL, BATON_TEST_REDIS_URL, BATON_TEST_NAMESPACE

`dramatiq tests.support.worker_app` runs it; so does `python -m tests.support.worker_app
THREADS`, which starts one worker process with a short worker_timeout (the dramatiq CLI
of this version has no option for it) and stops on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO

import baton_dramatiq as baton
from baton_dramatiq import faults as baton_faults

from .actors import declare
from .llm_actors import declare_llm

DATABASE_URL = os.environ["BATON_TEST_DATABASE_URL"]
_redis = redis.Redis.from_url(os.environ["BATON_TEST_REDIS_URL"])
REDIS_URL = os.environ["BATON_TEST_REDIS_URL"]
NAMESPACE = os.environ["BATON_TEST_NAMESPACE"]


class RecordingSweeper(baton.Sweeper):
    """Records each sweep it ran, so tests can check that sweeps never overlap."""

    def sweep_once(self, *args: Any, **kwargs: Any) -> baton.SweepReport:
        report = super().sweep_once(*args, **kwargs)
        if report.ran:
            record = [
                report.holder,
                report.started_at.timestamp(),
                report.finished_at.timestamp(),
                report.rescued,
                report.published,
            ]
            _redis.rpush(f"{NAMESPACE}:sweeps", json.dumps(record))
        return report


def make_broker() -> tuple[RedisBroker, baton.Store, baton.RedisEventBus]:
    broker = RedisBroker(
        url=REDIS_URL, namespace=NAMESPACE, heartbeat_timeout=4_000, maintenance_chance=100_000
    )
    broker.add_middleware(AsyncIO())
    store = baton.Store(DATABASE_URL)
    events = baton.RedisEventBus(REDIS_URL, prefix=NAMESPACE + ":")
    broker.add_middleware(baton.WorkflowMiddleware(store, events=events, claim_timeout=3))
    if "BATON_TEST_SWEEP_INTERVAL" in os.environ:
        broker.add_middleware(
            RecordingSweeper(
                store,
                interval=float(os.environ["BATON_TEST_SWEEP_INTERVAL"]),
                rescue_after=float(os.environ.get("BATON_TEST_RESCUE_AFTER", "1")),
            )
        )
    return broker, store, events


def crash_at(point: str) -> None:
    """Kill this process, as a power cut would, the first time `point` is reached."""
    if point == os.environ.get("BATON_TEST_FAULT"):
        os.kill(os.getpid(), signal.SIGKILL)


def run_key(workflow_id: str) -> str:
    return f"{NAMESPACE}:runs:{workflow_id}"


def record(workflow_id: str, step_name: str) -> None:
    _redis.rpush(run_key(workflow_id), step_name)


broker, store, events = make_broker()
baton_faults.hook = crash_at
dramatiq.set_broker(broker)
actors = declare(broker, record)
llm_actors = declare_llm(broker, record)


def main() -> None:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=50)
    try:
        worker.start()
    except baton.SchemaOutOfDate as exc:
        print(exc, file=sys.stderr)
        sys.exit(3)
    print("ready", flush=True)
    stop.wait()
    worker.stop(timeout=5000)
    broker.close()


if __name__ == "__main__":
    main()
