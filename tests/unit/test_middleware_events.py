"""When recording how a step ended waits for its events to be out, and when it does not."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

import baton_dramatiq as baton
from baton_dramatiq.bus import EventBus
from baton_dramatiq.event_model import Event
from baton_dramatiq.store import StepChange, Transition


class GatedBus(EventBus):
    """Holds every send until the gate opens; notes how many messages were queued then."""

    def __init__(self, broker: StubBroker) -> None:
        self.broker = broker
        self.gate = threading.Event()
        self.sent: list[tuple[str, int]] = []  # (step, messages already enqueued)

    def publish_many(self, batch: list[tuple[str, list[Event]]]) -> None:
        assert self.gate.wait(10), "the gate never opened"
        queued = self.broker.queues["default"].qsize()
        self.sent += [(e.payload["step_name"], queued) for _, events in batch for e in events]


@pytest.fixture
def setup() -> Iterator[tuple[StubBroker, baton.WorkflowMiddleware, GatedBus]]:
    broker = StubBroker()
    dramatiq.actor(lambda: None, actor_name="noop", broker=broker)
    store = baton.Store("sqlite://")
    bus = GatedBus(broker)
    middleware = baton.WorkflowMiddleware(store, events=bus, check_schema=False)
    try:
        yield broker, middleware, bus
    finally:
        bus.gate.set()
        middleware._publisher.stop()
        store.dispose()


def completed(step: str) -> StepChange:
    return StepChange(
        workflow_id="wf",
        workflow_name="flow",
        step_name=step,
        state="completed",
        worker="w1",
        attempt=1,
        has_result=True,
        error=None,
        version=3,
        at=dt.datetime.now(dt.UTC),
    )


def step_message() -> dict[str, object]:
    """A ready step's stored message, as a completion hands it back."""
    return dramatiq.Message(
        queue_name="default", actor_name="noop", args=(), kwargs={}, options={}
    ).asdict()


def wait_for(condition: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.005)
    return bool(condition())  # type: ignore[operator]


def test_a_completion_that_makes_nothing_ready_does_not_wait_for_a_busy_bus(setup) -> None:
    broker, middleware, bus = setup
    # Given another thread of the worker in the middle of sending an event
    step_x = completed("x")
    sending = threading.Thread(target=middleware.apply, args=(broker, Transition(changes=[step_x])))
    sending.start()
    assert wait_for(lambda: middleware._publisher._send_lock.locked())

    # When a worker records a completion that makes no step ready and finishes nothing
    started = time.monotonic()
    middleware.apply(broker, Transition(changes=[completed("a")]), lazy_events=True)

    # Then it returned at once, its event still queued; it goes out after the other one
    assert time.monotonic() - started < 1.0 and bus.sent == []
    bus.gate.set()
    sending.join(5)
    assert wait_for(lambda: bus.sent == [("x", 0), ("a", 0)])


def test_a_completion_that_makes_a_step_ready_enqueues_it_after_its_event_is_out(setup) -> None:
    broker, middleware, bus = setup
    ready = step_message()
    transition = Transition(changes=[completed("a")], ready=[ready])

    # When a worker records a completion that makes a step ready, while the bus is held
    recording = threading.Thread(
        target=middleware.apply, args=(broker, transition), kwargs={"lazy_events": True}
    )
    recording.start()

    # Then nothing is enqueued until the event is out, and the event went out first
    time.sleep(0.2)
    assert recording.is_alive() and broker.queues["default"].qsize() == 0
    bus.gate.set()
    recording.join(5)
    assert not recording.is_alive()
    assert bus.sent == [("a", 0)] and broker.queues["default"].qsize() == 1


def test_a_completion_that_makes_a_step_ready_leaves_its_enqueue_to_a_busy_sender(
    setup,
) -> None:
    broker, middleware, bus = setup
    # Given another thread of the worker in the middle of sending an event
    sending = threading.Thread(
        target=middleware.apply, args=(broker, Transition(changes=[completed("x")]))
    )
    sending.start()
    assert wait_for(lambda: middleware._publisher._send_lock.locked())

    # When a worker records a completion that makes a step ready
    started = time.monotonic()
    transition = Transition(changes=[completed("a")], ready=[step_message()])
    middleware.apply(broker, transition, lazy_events=True)

    # Then it returned at once, with nothing sent or enqueued yet
    assert time.monotonic() - started < 1.0
    assert bus.sent == [] and broker.queues["default"].qsize() == 0
    # And the sending thread sends its event, and only then enqueues its step
    bus.gate.set()
    sending.join(5)
    assert wait_for(lambda: broker.queues["default"].qsize() == 1)
    assert bus.sent == [("x", 0), ("a", 0)]


def test_a_transition_applied_from_outside_a_worker_waits_for_its_events(setup) -> None:
    broker, middleware, bus = setup
    # `WorkflowRun.cancel()` applies its transition so; the caller may exit right after
    applying = threading.Thread(
        target=middleware.apply, args=(broker, Transition(changes=[completed("a")]))
    )
    applying.start()
    time.sleep(0.2)
    assert applying.is_alive() and bus.sent == []
    bus.gate.set()
    applying.join(5)
    assert bus.sent == [("a", 0)]


def test_ready_steps_that_cannot_be_enqueued_are_logged_and_left_to_the_sweeper(
    setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broker, middleware, bus = setup
    bus.gate.set()
    ready = [step_message() for _ in range(7)]

    def refuse(message: object, *, delay: object = None) -> None:
        raise ConnectionError("the broker is down")

    monkeypatch.setattr(broker, "enqueue", refuse)

    # When a completion made seven steps ready and the broker refuses them
    middleware.apply(broker, Transition(changes=[completed("a")], ready=ready), lazy_events=True)

    # Then the worker goes on (the store keeps them available for the Sweeper), having
    # said how many it could not enqueue and sent the step's event all the same
    [record] = [r for r in caplog.records if "Could not enqueue" in r.getMessage()]
    assert record.getMessage().startswith("Could not enqueue 7 ready steps")
    assert record.exc_info is not None and isinstance(record.exc_info[1], ConnectionError)
    assert bus.sent == [("a", 0)]
