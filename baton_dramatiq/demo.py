"""The research-brief demo: five steps in a diamond, run with a worker in this process.

    fetch_sources -> summarize, keywords, credibility -> compile_brief

`baton demo` runs it embedded (Dramatiq's StubBroker, SQLite in memory, in-memory
events) or, given URLs, on Redis and a real database. The steps sleep a little so that
progress can be watched, and return small made-up results. The core never imports
this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker

import baton_dramatiq as baton

from . import migrations
from .events import Event, EventBus, MemoryEventBus
from .testing import worker

#: a queue of its own, so that workers of other applications on the same Redis never
#: receive the demo's messages
QUEUE = "baton_demo"

#: how long each step works, as a multiple of --step-seconds; unequal so that the three
#: parallel steps visibly finish in their own order
PACE = {
    "fetch_sources": 1.0,
    "summarize": 1.5,
    "keywords": 0.6,
    "credibility": 1.1,
    "compile_brief": 0.5,
}

#: a failing step gives up after seconds, not Dramatiq's default 20 retries over days
RETRIES = {"max_retries": 2, "min_backoff": 200, "max_backoff": 1000}


# -- the steps ---------------------------------------------------------------------------


def fetch_sources(topic: str, seconds: float) -> dict[str, Any]:
    """Pretend to search the web for `topic`."""
    time.sleep(seconds * PACE["fetch_sources"])
    slug = topic.lower().replace(" ", "-")
    return {
        "topic": topic,
        "documents": [
            {
                "title": f"A survey of {topic}",
                "url": f"https://example.org/{slug}/survey",
                "year": 2024,
            },
            {
                "title": f"{topic}: what changed this year",
                "url": f"https://news.example.com/{slug}",
                "year": 2025,
            },
            {
                "title": f"Open problems in {topic}",
                "url": f"https://arxiv.example/{slug}-open",
                "year": 2025,
            },
        ],
    }


def summarize(seconds: float) -> dict[str, Any]:
    """Pretend to summarize the documents found."""
    docs = baton.get_result("fetch_sources")["documents"]
    time.sleep(seconds * PACE["summarize"])
    titles = "; ".join(doc["title"] for doc in docs)
    return {"summary": f"{len(docs)} sources reviewed: {titles}.", "documents": len(docs)}


def keywords(seconds: float) -> dict[str, Any]:
    """Pretend to extract keywords from the documents' titles."""
    docs = baton.get_result("fetch_sources")["documents"]
    time.sleep(seconds * PACE["keywords"])
    words = {w.strip(":,.").lower() for doc in docs for w in doc["title"].split() if len(w) > 4}
    return {"keywords": sorted(words)[:6]}


def credibility(seconds: float) -> dict[str, Any]:
    """Pretend to rate each source: recent and academic sources score higher."""
    docs = baton.get_result("fetch_sources")["documents"]
    time.sleep(seconds * PACE["credibility"])
    scores = {}
    for doc in docs:
        academic = 0.1 if "arxiv" in doc["url"] else 0.0
        scores[doc["url"]] = round(0.6 + 0.1 * (doc["year"] - 2023) + academic, 2)
    return {"score": round(sum(scores.values()) / len(scores), 2), "by_source": scores}


def compile_brief(topic: str, seconds: float) -> dict[str, Any]:
    """Put the three analyses together: the fan-in step."""
    results = baton.get_all_results()  # {"summarize": ..., "keywords": ..., "credibility": ...}
    time.sleep(seconds * PACE["compile_brief"])
    return {
        "title": f"Research brief: {topic}",
        "summary": results["summarize"]["summary"],
        "keywords": results["keywords"]["keywords"],
        "credibility": results["credibility"]["score"],
        "built_from": sorted(results),
    }


STEPS: tuple[Callable[..., dict[str, Any]], ...] = (
    fetch_sources,
    summarize,
    keywords,
    credibility,
    compile_brief,
)


def declare_actors(broker: dramatiq.Broker) -> dict[str, baton.WorkflowActor]:
    """Declare the demo's steps as workflow actors on `broker`; returns them by name.

    Dramatiq binds an actor to the broker it is declared on, so each setup declares its
    own rather than binding to whichever broker was global at import time.
    """
    options: dict[str, Any] = {"broker": broker, "queue_name": QUEUE, **RETRIES}
    declare = baton.workflow_actor(**options)
    return {fn.__name__: declare(fn) for fn in STEPS}


def build_workflow(
    actors: dict[str, baton.WorkflowActor], topic: str, seconds: float
) -> baton.Workflow:
    """The diamond of API.md §3, named ``research:<topic>``."""
    a = actors
    analyses = ["summarize", "keywords", "credibility"]
    wf = baton.Workflow(name=f"research:{topic}").add(
        "fetch_sources", a["fetch_sources"].message(topic, seconds)
    )
    for name in analyses:
        wf.add(name, a[name].message(seconds), deps=["fetch_sources"])
    return wf.add("compile_brief", a["compile_brief"].message(topic, seconds), deps=analyses)


# -- where it runs -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DemoSetup:
    """A broker with a WorkflowMiddleware, its store and bus, and what they are."""

    broker: dramatiq.Broker
    store: baton.Store
    bus: EventBus
    label: str


@contextlib.contextmanager
def open_setup(
    database_url: str | None = None, redis_url: str | None = None
) -> Iterator[DemoSetup]:
    """The demo's broker, store and bus, migrated and set as the global broker.

    Parameters:
      database_url(str|None): the store; SQLite in memory when None.
      redis_url(str|None): a RedisBroker and RedisEventBus on it; Dramatiq's StubBroker
        and a MemoryEventBus when None.
    """
    with contextlib.ExitStack() as cleanup:
        store = baton.Store(database_url or "sqlite://")
        cleanup.callback(store.dispose)
        bus: EventBus
        if redis_url:
            from dramatiq.brokers.redis import RedisBroker

            broker: dramatiq.Broker = RedisBroker(url=redis_url)  # type: ignore[no-untyped-call]
            cleanup.callback(broker.close)
            bus = baton.RedisEventBus(redis_url)
            cleanup.callback(bus.close)
        else:
            broker, bus = StubBroker(), MemoryEventBus()
        migrations.upgrade(store)
        # What `dramatiq` does in each worker process: starts TimeLimit's watchdog.
        broker.emit_after("process_boot")
        broker.add_middleware(baton.WorkflowMiddleware(store, events=bus))
        # Workflow.add checks each step's actor against the global broker.
        dramatiq.set_broker(broker)
        where = (
            "SQLite in memory"
            if database_url is None
            else store.engine.url.render_as_string(hide_password=True)
        )
        label = (
            f"RedisBroker + {where} + Redis events"
            if redis_url
            else f"StubBroker + {where} + in-memory events"
        )
        yield DemoSetup(broker=broker, store=store, bus=bus, label=label)


@contextlib.contextmanager
def worker_logs(verbose: bool = False) -> Iterator[None]:
    """Route the in-process worker's log records to stderr while the demo runs.

    A failing step already shows as events (retryable, discarded, with its error), so
    by default Dramatiq's per-message tracebacks are left out and baton's own warnings
    take one line each; `verbose` shows every warning with its traceback.
    """
    handler = logging.StreamHandler(sys.stderr)
    full = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    handler.setFormatter(full if verbose else _OneLine())
    levels = {
        "dramatiq": logging.WARNING if verbose else logging.CRITICAL,
        "baton_dramatiq": logging.WARNING,
    }
    saved = []
    for name, level in levels.items():
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(level)
        logger.propagate = False
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {' '.join(record.getMessage().split())}"


# -- running it --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """How the demo workflow ended. `brief` is compile_brief's result (None if it failed)."""

    workflow_id: str
    outcome: str
    failed_steps: tuple[str, ...]
    brief: dict[str, Any] | None


def run(
    setup: DemoSetup,
    *,
    topic: str = "solid-state batteries",
    step_seconds: float = 0.4,
    timeout: float = 60.0,
    on_start: Callable[[str], None] = lambda workflow_id: None,
    on_event: Callable[[Event], None] = lambda event: None,
) -> DemoResult:
    """Insert the demo workflow and run it to the end with a worker in this process.

    Parameters:
      step_seconds(float): how long a step works, roughly, in seconds.
      timeout(float): the longest wait for the next event, in seconds.
      on_start: called with the workflow's id just before it is inserted.
      on_event: called with each event as it arrives, the last being workflow_finished.

    Raises:
      WaitTimeout: no event came for `timeout` seconds.
    """
    actors = declare_actors(setup.broker)
    wf = build_workflow(actors, topic, step_seconds)
    with worker(setup.broker, worker_timeout=100):
        # Subscribed before the insert, so that not even the first event is missed.
        with baton.events.subscribe_workflow(
            wf.id, timeout=timeout, bus=setup.bus, store=setup.store, broker=setup.broker
        ) as events:
            on_start(wf.id)
            wf.insert(broker=setup.broker, store=setup.store)
            for event in events:
                on_event(event)
    view = baton.query.get_workflow(wf.id, store=setup.store, broker=setup.broker)
    results = baton.WorkflowRun.get(wf.id, store=setup.store, broker=setup.broker).results()
    return DemoResult(
        workflow_id=wf.id,
        outcome=view.state,
        failed_steps=view.failed_steps,
        brief=results.get("compile_brief"),
    )
