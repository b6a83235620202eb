"""What a subscriber iterates: no doubles, no stale versions, and a store to replay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from .bus import AsyncRawSubscription, EventBus, RawSubscription
from .errors import WaitTimeout, WorkflowNotFound
from .event_model import STEP_UPDATED, WORKFLOW_FINISHED, Event

if TYPE_CHECKING:
    from .store import Store


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
