"""A worker application configured from the environment, as a real deployment is.

    BATON_TEST_DATABASE_URL, BATON_TEST_REDIS_URL, BATON_TEST_NAMESPACE

`dramatiq tests.support.worker_app` runs it; so does `python -m tests.support.worker_app
THREADS`, which starts one worker process with a short worker_timeout (the dramatiq CLI
of this version has no option for it) and stops on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO

import baton_dramatiq as baton

from .actors import declare

DATABASE_URL = os.environ["BATON_TEST_DATABASE_URL"]
REDIS_URL = os.environ["BATON_TEST_REDIS_URL"]
NAMESPACE = os.environ["BATON_TEST_NAMESPACE"]


def make_broker() -> tuple[RedisBroker, baton.Store, baton.RedisEventBus]:
    broker = RedisBroker(
        url=REDIS_URL, namespace=NAMESPACE, heartbeat_timeout=4_000, maintenance_chance=100_000
    )
    broker.add_middleware(AsyncIO())
    store = baton.Store(DATABASE_URL)
    events = baton.RedisEventBus(REDIS_URL, prefix=NAMESPACE + ":")
    broker.add_middleware(baton.WorkflowMiddleware(store, events=events, claim_timeout=3))
    return broker, store, events


def run_key(workflow_id: str) -> str:
    return f"{NAMESPACE}:runs:{workflow_id}"


_redis = redis.Redis.from_url(REDIS_URL)


def record(workflow_id: str, step_name: str) -> None:
    _redis.rpush(run_key(workflow_id), step_name)


broker, store, events = make_broker()
dramatiq.set_broker(broker)
actors = declare(broker, record)


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
