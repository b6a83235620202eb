"""Publishes a worker's events in batches, in the order they were posted.

Posts go to a queue shared by the process, and whoever sends, sends everything queued
in one `EventBus.publish_many` call (one Redis command); sends never overlap, so
events go out in the order they were posted. A thread that must know its events are
out (before it enqueues a dependent, or records a finish as published) sends the queue
itself when nobody else is sending, which keeps an idle worker's hops short; when
somebody is, it hands over to the publishing thread, which sends what piled up
meanwhile as one batch, and waits. A claim's ``executing`` event is handed over without
waiting: it goes out before anything the process posts after it.

A post may carry what must happen once its events are out (`then`: the enqueue of the
steps a completion made ready). Whoever sends the post runs it right after the send, so
the poster need not wait for a send somebody else is making.

Whoever sends a batch that holds ``workflow_finished`` events then records them as
published (`sent_finishes`), all in one call: a worker need not wait for a finish to go
out only to record that it did. A crash in between leaves them unrecorded, and the
Sweeper publishes them again, which subscribers drop.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable

from .bus import EventBus
from .event_model import WORKFLOW_FINISHED, Event

logger = logging.getLogger("baton_dramatiq")


class _Post:
    __slots__ = ("done", "events", "ok", "then", "workflow_id")

    def __init__(
        self,
        workflow_id: str,
        events: list[Event],
        done: threading.Event | None,
        then: Callable[[], None] | None,
    ):
        self.workflow_id, self.events, self.done, self.then = workflow_id, events, done, then
        self.ok = False


class Publisher:
    """Batches one process's events for `bus` (a forked child gets a thread of its own).

    `sent_finishes` is called with the ids of the workflows whose ``workflow_finished``
    a send put out, before the posts waiting on that send return.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        max_batch: int = 256,
        wait_timeout: float = 30.0,
        sent_finishes: Callable[[list[str]], None] | None = None,
    ):
        self.bus = bus
        self.max_batch, self.wait_timeout = max_batch, wait_timeout
        self.sent_finishes = sent_finishes
        self._reset()
        ref = weakref.ref(self)

        def in_child() -> None:  # a forked child starts afresh: no thread, no held locks
            publisher = ref()
            if publisher is not None:
                publisher._reset()

        os.register_at_fork(after_in_child=in_child)

    def _reset(self) -> None:
        self._queue: deque[_Post] = deque()
        self._send_lock = threading.Lock()  # held by whoever is sending
        self._wake = threading.Condition(threading.Lock())  # wakes the publishing thread
        self._thread: threading.Thread | None = None
        self._stopping = False

    def post(
        self,
        workflow_id: str,
        events: list[Event],
        *,
        wait: bool = True,
        eager: bool = False,
        then: Callable[[], None] | None = None,
    ) -> bool:
        """Publish `events`; with `wait`, return once they are out (False: the bus failed).

        Without `wait`, they go out soon, before anything posted after them: sent by this
        thread when nobody else is sending and `eager`, else with whoever sends next.
        `then` is called by whoever sends them, once they are out (or the bus failed),
        before anything posted after them goes out; what it raises is logged.
        """
        post = _Post(workflow_id, events, threading.Event() if wait else None, then)
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="baton-publisher", daemon=True
                )
                self._thread.start()
            # Whoever finds the queue empty makes sure a drain follows; a drain runs until
            # it finds the queue empty, so a post behind another goes out with it.
            first = not self._queue
            self._queue.append(post)
        if (eager or post.done is not None) and self._send_lock.acquire(blocking=False):
            try:
                self._drain()  # nobody was sending: send it all now, ours included
            finally:
                self._send_lock.release()
        elif first:
            with self._wake:
                self._wake.notify()
        if post.done is None:
            return True
        return post.done.wait(self.wait_timeout) and post.ok

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued, then end the thread."""
        with self._wake:
            thread, self._stopping = self._thread, True
            self._wake.notify()
        if thread is not None:
            thread.join(timeout)
        with self._wake:
            self._thread, self._stopping = None, False

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if not self._queue:
                    return  # stopping, and nothing left
            with self._send_lock:
                self._drain()

    def _drain(self) -> None:
        """Send the queue, in batches, until it is empty (holding the send lock)."""
        while self._queue:
            with self._wake:
                size = min(len(self._queue), self.max_batch)
                batch = [self._queue.popleft() for _ in range(size)]
            self._send(batch)

    def _send(self, batch: list[_Post]) -> None:
        ok = True
        try:
            self.bus.publish_many([(post.workflow_id, post.events) for post in batch])
        except Exception:
            ok = False
            # a bus that is down must not stop the workflow; subscribers re-read the store
            logger.warning("Could not publish %d event batch(es)", len(batch), exc_info=True)
        if ok and self.sent_finishes is not None:
            finished = [
                post.workflow_id
                for post in batch
                if any(event.event == WORKFLOW_FINISHED for event in post.events)
            ]
            if finished:
                try:
                    self.sent_finishes(finished)
                except Exception:
                    logger.warning(
                        "Could not record %d workflow_finished event(s) as published; the "
                        "Sweeper will publish them again",
                        len(finished),
                        exc_info=True,
                    )
        for post in batch:
            post.ok = ok
            if post.then is not None:
                try:
                    post.then()
                except Exception:
                    logger.exception(
                        "What had to follow the events of workflow %s failed", post.workflow_id
                    )
            if post.done is not None:
                post.done.set()
