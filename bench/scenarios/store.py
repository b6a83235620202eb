"""The store alone: diamonds claimed and completed by threads, with no broker and no events.

What `WorkflowMiddleware` asks of PostgreSQL for each step (the claim, the completion,
the finish and its publication mark), from 8 threads in the harness's own process, as
fast as they go: steps per second, and the CPU a step costs the client and PostgreSQL.
Without Dramatiq, Redis and the worker's thread switches, it moves far less from run to
run than the end-to-end scenarios, so it shows a change to the store that they would
bury in their noise. On request only: ``python -m bench --only store``.
"""

from __future__ import annotations

import datetime as dt
import queue
import resource
import threading
import time
from statistics import median
from typing import Any

from dramatiq.brokers.stub import StubBroker

import baton_dramatiq as baton
from baton_dramatiq.setup import STEP_OPTION
from baton_dramatiq.store import Claim

from ..config import Settings
from ..services import Services
from .overhead import _cpu_seconds, _postgres_pids, _total

NAME = "store"
ROUNDS = 3
_STOP = ("", "")


def run(services: Services, settings: Settings) -> dict[str, Any]:
    diamonds = 100 if settings.quick else 800
    with services.environment(database=True) as env:
        store = baton.Store(env.database_url)
        broker = StubBroker()
        noop = baton.workflow_actor(broker=broker, actor_name="store_noop")(lambda: None)
        try:
            rounds = [
                _round(store, broker, noop, diamonds, settings.threads) for _ in range(ROUNDS)
            ]
        finally:
            store.dispose()
            broker.close()
    steps = 5 * diamonds
    return {
        "diamonds": diamonds,
        "threads": settings.threads,
        "rounds": ROUNDS,
        "steps_per_s": median(steps / r["seconds"] for r in rounds),
        "client_cpu_ms_per_step": median(1000 * r["client_cpu_s"] / steps for r in rounds),
        "postgres_cpu_ms_per_step": median(1000 * r["postgres_cpu_s"] / steps for r in rounds),
    }


def _round(
    store: baton.Store, broker: StubBroker, noop: Any, diamonds: int, threads: int
) -> dict[str, float]:
    """Insert `diamonds` research-brief diamonds, then run all their steps through the
    store from `threads` threads; what it took, read before the threads (and so their
    PostgreSQL backends) end."""
    ready: queue.Queue[tuple[str, str]] = queue.Queue()
    for _ in range(diamonds):
        wf = baton.Workflow(name="store").add("fetch_sources", noop.message())
        for middle in ("summarize", "keywords", "credibility"):
            wf.add(middle, noop.message(), deps=["fetch_sources"])
        wf.add("compile_brief", noop.message(), deps=["summarize", "keywords", "credibility"])
        store.insert_workflow(*wf._rows(wf.validate(broker)))
        ready.put((wf.id, "fetch_sources"))
    finished = 0
    lock = threading.Lock()
    done = threading.Event()
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)

    def work() -> None:
        nonlocal finished
        while (item := ready.get()) != _STOP:
            workflow_id, step = item
            claim = store.claim(workflow_id, step, worker_id="bench", stale_before=stale)
            assert isinstance(claim, Claim), claim
            transition = store.complete(
                workflow_id, step, claim.attempt, None, encoded="null", dependents=claim.dependents
            )
            for message in transition.ready:
                ready.put(tuple(message["options"][STEP_OPTION]))
            if transition.finished is not None:
                store.mark_published(workflow_id)
                with lock:
                    finished += 1
                    if finished == diamonds:
                        done.set()

    workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    postgres = _total(_postgres_pids(), _cpu_seconds)
    client = _self_cpu()
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    done.wait()
    took = time.perf_counter() - start
    out = {
        "seconds": took,
        "client_cpu_s": _self_cpu() - client,
        # backends born during the round count whole: they did nothing else
        "postgres_cpu_s": _total(_postgres_pids(), _cpu_seconds) - postgres,
    }
    for _ in workers:
        ready.put(_STOP)
    for worker in workers:
        worker.join()
    return out


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
