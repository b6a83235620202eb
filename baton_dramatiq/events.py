"""Progress events: subscribe to one workflow, or to all of them.

Every step transition is published as ``("workflow_step_updated", payload)`` on the
topics ``workflow:all`` and ``workflow:<id>``; a workflow's end as
``("workflow_finished", payload)``. Events are notifications; the store is the record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .bus import AsyncRawSubscription, EventBus, MemoryEventBus, RawSubscription
from .event_model import (
    ALL_TOPIC,
    STEP_UPDATED,
    WORKFLOW_FINISHED,
    Event,
    step_event,
    workflow_topic,
)
from .setup import resolve
from .streams import AsyncEventStream, EventStream, _Tracker

if TYPE_CHECKING:
    import dramatiq

    from .store import Store

__all__ = [
    "ALL_TOPIC",
    "STEP_UPDATED",
    "WORKFLOW_FINISHED",
    "AsyncEventStream",
    "AsyncRawSubscription",
    "Event",
    "EventBus",
    "EventStream",
    "MemoryEventBus",
    "RawSubscription",
    "asubscribe_workflow",
    "step_event",
    "subscribe_all",
    "subscribe_workflow",
    "workflow_topic",
]


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
