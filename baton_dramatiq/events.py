"""Progress events: names, payloads, the in-memory bus, and workflow subscriptions.

Every step transition is published as ``("workflow_step_updated", payload)`` on the
topics ``workflow:all`` and ``workflow:<id>``; a workflow's end as
``("workflow_finished", payload)``. Events are notifications; the store is the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from .errors import WaitTimeout, WorkflowNotFound
from .setup import resolve

if TYPE_CHECKING:
    import dramatiq

    from .store import StepChange, Store

STEP_UPDATED = "workflow_step_updated"
WORKFLOW_FINISHED = "workflow_finished"
ALL_TOPIC = "workflow:all"


def workflow_topic(workflow_id: str) -> str:
    return f"workflow:{workflow_id}"


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One event: its name and its payload (a JSON object)."""

    event: str
    payload: dict[str, Any]


def step_event(change: StepChange) -> Event:
    return Event(
        STEP_UPDATED,
        {
            "workflow_id": change.workflow_id,
            "workflow_name": change.workflow_name,
            "step_name": change.step_name,
            "state": change.state,
            "worker": change.worker,
            "attempt": change.attempt,
            "has_result": change.has_result,
            "error": change.error,
            "version": change.version,
            "at": change.at.isoformat(),
        },
    )


# -- buses -----------------------------------------------------------------------------


class RawSubscription:
    """A live subscription to some topics of a bus (sync)."""

    #: set when the connection dropped since the last `get`: events may have been missed
    lost: bool = False

    def get(self, timeout: float | None) -> Event | None:
        """The next event, or None after `timeout` seconds."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class AsyncRawSubscription:
    """A live subscription to some topics of a bus (asyncio)."""

    lost: bool = False

    async def get(self, timeout: float | None) -> Event | None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


class EventBus:
    """Where events are published and subscribed to."""

    def publish(self, workflow_id: str, events: list[Event]) -> None:
        """Publish `events` of one workflow, in order, on ``workflow:all`` and its topic."""
        raise NotImplementedError

    def subscribe(self, topics: list[str]) -> RawSubscription:
        """Subscribe; live when this returns."""
        raise NotImplementedError

    async def asubscribe(self, topics: list[str]) -> AsyncRawSubscription:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


class MemoryEventBus(EventBus):
    """Events inside one process: for the embedded setup and tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, set[_MemorySink]] = {}

    def publish(self, workflow_id: str, events: list[Event]) -> None:
        topics = (ALL_TOPIC, workflow_topic(workflow_id))
        with self._lock:
            sinks = {sink for topic in topics for sink in self._subscribers.get(topic, ())}
        for sink in sinks:
            for event in events:
                sink.put(event)

    def subscribe(self, topics: list[str]) -> RawSubscription:
        sub = _MemorySubscription(self, topics)
        self._add(sub, topics)
        return sub

    async def asubscribe(self, topics: list[str]) -> AsyncRawSubscription:
        sub = _AsyncMemorySubscription(self, topics, asyncio.get_running_loop())
        self._add(sub, topics)
        return sub

    def _add(self, sink: _MemorySink, topics: list[str]) -> None:
        with self._lock:
            for topic in topics:
                self._subscribers.setdefault(topic, set()).add(sink)

    def _remove(self, sink: _MemorySink, topics: list[str]) -> None:
        with self._lock:
            for topic in topics:
                self._subscribers.get(topic, set()).discard(sink)


class _MemorySink:
    def put(self, event: Event) -> None:
        raise NotImplementedError


class _MemorySubscription(_MemorySink, RawSubscription):
    def __init__(self, bus: MemoryEventBus, topics: list[str]) -> None:
        self._bus, self._topics = bus, topics
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def put(self, event: Event) -> None:
        self._queue.put(event)

    def get(self, timeout: float | None) -> Event | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._bus._remove(self, self._topics)


class _AsyncMemorySubscription(_MemorySink, AsyncRawSubscription):
    def __init__(
        self, bus: MemoryEventBus, topics: list[str], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._bus, self._topics, self._loop = bus, topics, loop
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    def put(self, event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    async def get(self, timeout: float | None) -> Event | None:
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def aclose(self) -> None:
        self._bus._remove(self, self._topics)


# -- what a viewer of one workflow sees -------------------------------------------------


class _Tracker:
    """Drops doubles and stale versions; with a store, re-reads it to close gaps."""

    def __init__(self, workflow_id: str, store: Store | None, replay: bool) -> None:
        self.workflow_id = workflow_id
        self.store = store if replay else None
        self.versions: dict[str, int] = {}
        self.finished = False

    def snapshot(self, *, with_finish: bool) -> list[Event]:
        """Events for every step whose stored version is newer than what was yielded."""
        from .query import finished_event, get_workflow, get_workflow_steps

        if self.store is None:
            return []
        try:
            view = get_workflow(self.workflow_id, store=self.store)
            steps = get_workflow_steps(self.workflow_id, store=self.store)
        except WorkflowNotFound:
            return []
        out = []
        for step in steps:
            if step.version > self.versions.get(step.step_name, 0):
                self.versions[step.step_name] = step.version
                out.append(Event(STEP_UPDATED, step.payload(view)))
        if with_finish and view.outcome is not None:
            self.finished = True
            out.append(finished_event(view))
        return out

    def accept(self, event: Event, *, lost: bool) -> list[Event]:
        if self.finished:
            return []
        out = self.snapshot(with_finish=False) if lost else []
        if event.event == WORKFLOW_FINISHED:
            out.extend(self.snapshot(with_finish=False))
            self.finished = True
            return [*out, event]
        step, version = event.payload.get("step_name"), event.payload.get("version")
        if not isinstance(step, str) or not isinstance(version, int):
            return [*out, event]
        seen = self.versions.get(step, 0)
        if version > seen + 1:  # a gap: something was missed
            out.extend(self.snapshot(with_finish=False))
            seen = self.versions.get(step, 0)
        if version > seen:
            self.versions[step] = version
            out.append(event)
        return out


class EventStream:
    """An iterator of events; a context manager; `close()` ends it.

    For one workflow it ends after that workflow's `workflow_finished`.
    """

    def __init__(
        self,
        raw: RawSubscription,
        *,
        timeout: float | None,
        tracker: _Tracker | None = None,
        initial: list[Event] | None = None,
    ) -> None:
        self._raw = raw
        self._timeout = timeout
        self._tracker = tracker
        self._ready: list[Event] = list(initial or [])
        self._closed = False

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        while not self._ready:
            if self._closed or (self._tracker is not None and self._tracker.finished):
                self.close()
                raise StopIteration
            deadline = None if self._timeout is None else time.monotonic() + self._timeout
            event = self._raw.get(self._timeout)
            if event is None:
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(f"No event within {self._timeout} s")
                continue
            lost, self._raw.lost = self._raw.lost, False
            self._ready.extend(self._tracker.accept(event, lost=lost) if self._tracker else [event])
        return self._ready.pop(0)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._raw.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncEventStream:
    """The asyncio twin of EventStream: ``async for event in stream``."""

    def __init__(
        self,
        topics: list[str],
        bus: EventBus,
        *,
        timeout: float | None,
        tracker: _Tracker | None = None,
    ) -> None:
        self._topics, self._bus = topics, bus
        self._raw: AsyncRawSubscription | None = None
        self._timeout = timeout
        self._tracker = tracker
        self._ready: list[Event] = []
        self._closed = False

    async def start(self) -> AsyncEventStream:
        if self._raw is None:
            self._raw = await self._bus.asubscribe(self._topics)
            if self._tracker is not None:
                self._ready.extend(
                    await asyncio.to_thread(self._tracker.snapshot, with_finish=True)
                )
        return self

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        await self.start()
        assert self._raw is not None
        while not self._ready:
            if self._closed or (self._tracker is not None and self._tracker.finished):
                await self.aclose()
                raise StopAsyncIteration
            event = await self._raw.get(self._timeout)
            if event is None:
                if self._timeout is not None:
                    raise WaitTimeout(f"No event within {self._timeout} s")
                continue
            lost, self._raw.lost = self._raw.lost, False
            if self._tracker is None:
                self._ready.append(event)
            else:
                self._ready.extend(await asyncio.to_thread(self._tracker.accept, event, lost=lost))
        return self._ready.pop(0)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._raw is not None:
                await self._raw.aclose()

    async def __aenter__(self) -> AsyncEventStream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def subscribe_workflow(
    workflow_id: str,
    *,
    timeout: float | None = None,
    replay: bool = False,
    bus: EventBus | None = None,
    store: Store | None = None,
    broker: dramatiq.Broker | None = None,
) -> EventStream:
    """Subscribe to one workflow's events; live when this returns.

    Parameters:
      timeout(float|None): the longest wait for the next event, in seconds; past it the
        iterator raises WaitTimeout.
      replay(bool): first yield each step's current state from the store, and re-read
        the store on a gap, so a late viewer converges on the truth.
    """
    setup = resolve(broker=broker, store=store, bus=bus, need_broker=bus is None)
    event_bus = _need_bus(setup.bus)
    raw = event_bus.subscribe([workflow_topic(workflow_id)])
    tracker = _Tracker(workflow_id, setup.store, replay)
    return EventStream(
        raw, timeout=timeout, tracker=tracker, initial=tracker.snapshot(with_finish=True)
    )


def asubscribe_workflow(
    workflow_id: str,
    *,
    timeout: float | None = None,
    replay: bool = False,
    bus: EventBus | None = None,
    store: Store | None = None,
    broker: dramatiq.Broker | None = None,
) -> AsyncEventStream:
    """The asyncio form of `subscribe_workflow`: ``async for event in ...``.

    It subscribes on first use (``async with`` or the first ``async for`` step).
    """
    setup = resolve(broker=broker, store=store, bus=bus, need_broker=bus is None)
    tracker = _Tracker(workflow_id, setup.store, replay)
    return AsyncEventStream(
        [workflow_topic(workflow_id)], _need_bus(setup.bus), timeout=timeout, tracker=tracker
    )


def subscribe_all(
    *,
    timeout: float | None = None,
    bus: EventBus | None = None,
    broker: dramatiq.Broker | None = None,
) -> EventStream:
    """Subscribe to every workflow's events until closed."""
    if bus is None:
        bus = _need_bus(resolve(broker=broker).bus)
    return EventStream(bus.subscribe([ALL_TOPIC]), timeout=timeout)


def _need_bus(bus: EventBus | None) -> EventBus:
    if bus is None:
        from .errors import ConfigurationError

        raise ConfigurationError(
            "No event bus: pass events=baton.RedisEventBus(url) (or MemoryEventBus()) "
            "to WorkflowMiddleware, or bus= here."
        )
    return bus
