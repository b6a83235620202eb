"""The publisher: batches from many threads, every post sent once, in the order posted."""

from __future__ import annotations

import os
import threading
import time

import pytest

from baton_dramatiq.bus import EventBus
from baton_dramatiq.event_model import WORKFLOW_FINISHED, Event
from baton_dramatiq.publisher import Publisher


class RecordingBus(EventBus):
    """Records each batch; each send takes a moment, so posts pile up behind it."""

    def __init__(self, *, fail: bool = False) -> None:
        self.batches: list[list[tuple[str, list[Event]]]] = []
        self.fail = fail
        self._busy = threading.Lock()

    def publish_many(self, batch: list[tuple[str, list[Event]]]) -> None:
        with self._busy:
            assert self._busy.locked()
            if self.fail:
                raise ConnectionError("the bus is down")
            time.sleep(0.0005)
            self.batches.append(list(batch))

    def sent(self) -> list[tuple[str, int]]:
        return [(wid, e.payload["n"]) for batch in self.batches for wid, es in batch for e in es]


def test_posts_from_many_threads_go_out_once_each_in_the_order_each_thread_posted() -> None:
    bus = RecordingBus()
    publisher = Publisher(bus)
    results: list[bool] = []
    threads_count, per_thread = 8, 200

    def poster(t: int) -> None:
        for n in range(per_thread):
            # like a step: its executing event without waiting, then its end, waiting
            ok = publisher.post(f"t{t}", [Event("e", {"n": n})], wait=n % 2 == 1)
            results.append(ok)

    threads = [threading.Thread(target=poster, args=(t,)) for t in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + 5
    while len(bus.sent()) < threads_count * per_thread and time.monotonic() < deadline:
        time.sleep(0.01)  # the last posts made without waiting
    publisher.stop()

    sent = bus.sent()
    assert len(sent) == threads_count * per_thread  # none lost, none twice
    for t in range(threads_count):
        assert [n for wid, n in sent if wid == f"t{t}"] == list(range(per_thread))
    assert all(results)
    assert len(bus.batches) < len(sent)  # they were batched


def test_a_waiting_post_learns_that_the_bus_failed() -> None:
    publisher = Publisher(RecordingBus(fail=True))
    assert publisher.post("w", [Event("e", {"n": 1})], wait=True) is False
    assert publisher.post("w", [Event("e", {"n": 2})], wait=False) is True  # fire and forget
    publisher.stop()


def test_the_finishes_a_send_put_out_are_recorded_together_once_it_is_out() -> None:
    bus = RecordingBus()
    recorded: list[list[str]] = []
    sent_when_recorded: list[int] = []

    def sent_finishes(ids: list[str]) -> None:
        sent_when_recorded.append(len(bus.sent()))
        recorded.append(ids)

    publisher = Publisher(bus, sent_finishes=sent_finishes)
    with publisher._send_lock:  # a send in progress: the posts below pile up
        publisher.post("w1", [Event("e", {"n": 1}), Event(WORKFLOW_FINISHED, {"n": 2})], wait=False)
        publisher.post("w2", [Event("e", {"n": 3})], wait=False)
        publisher.post("w3", [Event(WORKFLOW_FINISHED, {"n": 4})], wait=False)
    publisher.stop()
    assert recorded == [["w1", "w3"]]  # one call for the batch, finishes only
    assert sent_when_recorded == [4]  # after the send


def test_a_waiting_post_returns_after_the_finishes_it_went_out_with_are_recorded() -> None:
    recorded: list[list[str]] = []
    publisher = Publisher(RecordingBus(), sent_finishes=recorded.append)
    try:
        assert publisher.post("w", [Event(WORKFLOW_FINISHED, {"n": 1})], wait=True)
        assert recorded == [["w"]]
    finally:
        publisher.stop()


def test_finishes_the_bus_did_not_take_are_not_recorded() -> None:
    recorded: list[list[str]] = []
    publisher = Publisher(RecordingBus(fail=True), sent_finishes=recorded.append)
    assert publisher.post("w", [Event(WORKFLOW_FINISHED, {"n": 1})], wait=True) is False
    publisher.stop()
    assert recorded == []


def test_a_failure_to_record_finishes_does_not_fail_the_send() -> None:
    def sent_finishes(ids: list[str]) -> None:
        raise ConnectionError("the store is down")

    bus = RecordingBus()
    publisher = Publisher(bus, sent_finishes=sent_finishes)
    assert publisher.post("w", [Event(WORKFLOW_FINISHED, {"n": 1})], wait=True) is True
    publisher.stop()
    assert bus.sent() == [("w", 1)]


@pytest.mark.parametrize("wait", [True, False])
def test_stop_sends_what_is_queued(wait: bool) -> None:
    bus = RecordingBus()
    publisher = Publisher(bus)
    for n in range(50):
        publisher.post("w", [Event("e", {"n": n})], wait=wait)
    publisher.stop()
    assert [n for _, n in bus.sent()] == list(range(50))


def test_posts_made_without_waiting_go_out_soon_by_themselves() -> None:
    bus = RecordingBus()
    publisher = Publisher(bus)

    def poster(t: int) -> None:
        for n in range(100):
            publisher.post(f"t{t}", [Event("e", {"n": n})], wait=False)
            if n % 10 == 9:
                time.sleep(0.005)  # lulls: the publishing thread goes back to sleep

    threads = [threading.Thread(target=poster, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + 5
    while len(bus.sent()) < 400 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert len(bus.sent()) == 400  # sent by the publishing thread, not by stop()
    finally:
        publisher.stop()


def test_an_eager_post_is_sent_by_its_own_thread_when_nobody_is_sending() -> None:
    bus = RecordingBus()
    publisher = Publisher(bus)
    try:
        assert publisher.post("w", [Event("e", {"n": 1})], wait=False, eager=True)
        assert bus.sent() == [("w", 1)]  # out before the post returned
    finally:
        publisher.stop()


def test_what_follows_a_post_runs_once_its_events_are_out_and_before_later_posts() -> None:
    bus = RecordingBus()
    publisher = Publisher(bus)
    seen: list[list[tuple[str, int]]] = []
    try:
        publisher.post(
            "w",
            [Event("e", {"n": 1})],
            wait=False,
            eager=True,
            then=lambda: seen.append(bus.sent()),
        )
        publisher.post("w", [Event("e", {"n": 2})], then=lambda: seen.append(bus.sent()))
        assert seen == [[("w", 1)], [("w", 1), ("w", 2)]]
    finally:
        publisher.stop()


def test_what_follows_a_post_runs_though_the_bus_failed_and_its_own_error_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = RecordingBus(fail=True)
    publisher = Publisher(bus)
    ran: list[int] = []

    def enqueue() -> None:
        ran.append(1)
        raise ConnectionError("the broker is down")

    try:
        publisher.post("w", [Event("e", {"n": 1})], wait=False, eager=True, then=enqueue)
        assert ran == [1]
        assert "What had to follow the events of workflow w failed" in caplog.text
        bus.fail = False
        assert publisher.post("w", [Event("e", {"n": 2})])  # the publisher goes on
    finally:
        publisher.stop()


def test_a_forked_child_publishes_with_a_thread_of_its_own() -> None:
    bus = RecordingBus()
    publisher = Publisher(bus)
    publisher.post("w", [Event("e", {"n": 0})], wait=False)  # the parent's thread runs
    publisher.post("w", [Event("e", {"n": 1})], wait=True)
    pid = os.fork()
    if pid == 0:  # the child: its own thread must send what it posts without waiting
        code = 1
        try:
            ok = publisher.post("w", [Event("e", {"n": 2})], wait=True)
            publisher.post("w", [Event("e", {"n": 3})], wait=False)
            deadline = time.monotonic() + 5
            while len(bus.sent()) < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            code = 0 if ok and [n for _, n in bus.sent()] == [0, 1, 2, 3] else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    publisher.stop()
    assert os.waitstatus_to_exitcode(status) == 0
    assert [n for _, n in bus.sent()] == [0, 1]  # the parent sent only its own
