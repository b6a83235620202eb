"""Group publishing: a worker's events go out in batches, in the order they were posted.

Every worker thread that settles a step would otherwise send a pipeline of its own.
Here a thread posts its events to a queue shared by the process and sends the queue,
everything in it, in one `EventBus.publish_many` call (one Redis pipeline), unless
another thread is sending already: then it waits its turn, and most often finds its
events sent with that batch. Sends never overlap, so posts go out in order.

A thread waits when it must know its events are out: before it enqueues a dependent or
records a finish as published. A claim's ``executing`` event does not wait: it rides
with the next batch, or a background thread sends it within moments.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque

from .bus import EventBus
from .event_model import Event

logger = logging.getLogger("baton_dramatiq")


class _Post:
    __slots__ = ("events", "ok", "sent", "workflow_id")

    def __init__(self, workflow_id: str, events: list[Event]) -> None:
        self.workflow_id, self.events = workflow_id, events
        self.sent = self.ok = False


class Publisher:
    """Publishes through `bus` in batches; one per process (it restarts after a fork)."""

    def __init__(self, bus: EventBus, *, max_batch: int = 512) -> None:
        self.bus = bus
        self.max_batch = max_batch
        self._start()

    def _start(self) -> None:
        """Fresh state: at construction, and in the child after a fork."""
        self._pid = os.getpid()
        self._queue: deque[_Post] = deque()
        self._send_lock = threading.Lock()  # held while a batch is on its way
        self._wake = threading.Condition(threading.Lock())  # for the background thread
        self._thread: threading.Thread | None = None
        self._stopping = False

    def post(self, workflow_id: str, events: list[Event], *, wait: bool = True) -> bool:
        """Publish `events`; with `wait`, return once they are out (False: the bus failed).

        Without `wait` they are queued, and go out before anything posted after them.
        """
        if self._pid != os.getpid():
            self._start()  # the parent's locks and thread are not ours
        post = _Post(workflow_id, events)
        self._queue.append(post)  # deque.append is atomic
        if not wait:
            with self._wake:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="baton-publisher", daemon=True
                    )
                    self._thread.start()
                self._wake.notify()
            return True
        with self._send_lock:
            if not post.sent:  # else the batch of the thread before took it along
                self._send_queued()
        return post.ok

    def flush(self) -> None:
        """Send whatever is queued now."""
        with self._send_lock:
            self._send_queued()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued, then end the background thread."""
        with self._wake:
            thread, self._stopping = self._thread, True
            self._wake.notify()
        if thread is not None:
            thread.join(timeout)
        with self._wake:
            self._thread, self._stopping = None, False
        self.flush()

    def _send_queued(self) -> None:
        """Send the queue in batches (the caller holds the send lock)."""
        while self._queue:
            batch: list[_Post] = []
            while self._queue and len(batch) < self.max_batch:
                batch.append(self._queue.popleft())
            ok = True
            try:
                self.bus.publish_many([(post.workflow_id, post.events) for post in batch])
            except Exception:
                ok = False
                # a bus that is down must not stop the workflow: the store is the record,
                # and replaying subscribers re-read it
                logger.warning("Could not publish a batch of %d post(s)", len(batch), exc_info=True)
            for post in batch:
                post.ok, post.sent = ok, True

    def _run(self) -> None:
        """Sends what was posted without waiting, when no worker thread did meanwhile."""
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
            self.flush()
