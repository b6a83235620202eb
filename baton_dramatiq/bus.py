"""Event buses: the interface, and the in-memory bus of one process."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading

from .event_model import ALL_TOPIC, Event, workflow_topic


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

    def publish_many(self, batch: list[tuple[str, list[Event]]]) -> None:
        """Publish several workflows' events, in order: ``[(workflow_id, events), ...]``."""
        for workflow_id, events in batch:
            self.publish(workflow_id, events)

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
