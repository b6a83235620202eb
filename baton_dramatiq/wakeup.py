"""Idle Redis consumers woken by the steps enqueued for them.

Dramatiq's Redis consumer polls. When its queue is empty it sleeps, a little longer each
time, up to the worker's `worker_timeout` (1 s by default), and a message enqueued
meanwhile waits for it to wake up. In a workflow each step is enqueued when the one
before it finishes, so on an idle worker every hop of a chain would pay that wait.

So whoever enqueues steps (`enqueue_steps`) also publishes one wake on each of the
batch's queues, on the same pipeline, after the messages. In a worker process,
`WorkflowMiddleware` makes the broker's consumers spend their back-off listening on
their queue's wake channel instead of in `time.sleep`: a wake ends the wait of every
consumer of the queue, each fetches at once, and those that find nothing wait again.
The wait is timed by the client, so a consumer that hears nothing fetches again after
its back-off exactly as Dramatiq's own does (a blocking pop's timeout on an idle Redis
runs up to 100 ms late). Each such consumer holds one more Redis connection, for its
subscription. Messages sent otherwise (`actor.send`) wake nobody: they are fetched after
the back-off, as ever.

The same consumers hold the acks of workflow steps for their next fetch, and send both
in one round trip: Dramatiq's consumer acks each message with a round trip of its own,
from the worker thread that ran it, and in a profile of the worker that round trip held
the GIL longer than anything else a step did. Only a busy consumer holds acks, and never
longer than its wait between fetches: one that goes idle, or closes, sends what it holds
at once, and acks that come while it is idle go out as Dramatiq's do. A held ack is safe
to lose in a crash, as an ack never sent is: Redis gives the step to another worker when
this one is gone, and the store tells that worker the step is done. Every other message
is acked as ever.

A worker's threads idle too, on the worker's queue of fetched messages, and Dramatiq
gives each wait `worker_timeout` as well, though a fetched message ends it at once: the
timeout only sets how soon an idle thread sees that the worker is stopping. With a short
`worker_timeout` (chosen so that consumers poll often) eight threads wake hundreds of
times a second each, and every hop of a workflow, which takes the GIL several times on
its way, waits behind them. `calm_idle_threads` lets them wait at least
`IDLE_THREAD_WAIT`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import dramatiq
import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import compute_backoff, q_name
from dramatiq.errors import ConnectionClosed

from .dispatch import can_pipeline, in_one_round_trip
from .setup import STEP_OPTION

logger = logging.getLogger("baton_dramatiq")

#: how often a consumer that never waits reads off the wakes it missed, in seconds:
#: unread, they would pile up in Redis's output buffer for its connection
DRAIN_EVERY = 0.5
#: how long a new consumer waits for Redis to confirm its subscription, in seconds
SUBSCRIBED_WITHIN = 5.0
#: the shortest wait of an idle worker thread for its next message, in seconds: the
#: longest a stop waits for an idle thread to notice it (Dramatiq's default
#: `worker_timeout` makes it a second)
IDLE_THREAD_WAIT = 0.1


def wake_channel(broker: RedisBroker, queue_name: str) -> str:
    """The channel the consumers of `queue_name` listen on (channels span databases,
    so the name holds the broker's)."""
    db = broker.client.connection_pool.connection_kwargs.get("db", 0)
    return f"{broker.namespace}:{queue_name}.wake:{db}"


def publish_wakes(
    pipe: redis.client.Pipeline, broker: RedisBroker, messages: Sequence[dict[str, Any]]
) -> None:
    """Queue on `pipe`, after `messages`, a wake for each of their queues."""
    for queue_name in dict.fromkeys(message["queue_name"] for message in messages):
        pipe.publish(wake_channel(broker, queue_name), "1")


def wake_consumers(broker: dramatiq.Broker) -> None:
    """Make the consumers `broker` creates from now on, in this process, listen for
    wakes. Only a RedisBroker's consumers poll; any other broker is left as it is, and
    so is a RedisBroker whose consumers do not count their outstanding messages as
    Dramatiq's own do."""
    if not isinstance(broker, RedisBroker) or "consume" in vars(broker):
        return
    consume = broker.consume

    def waking_consume(queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        if queue_name != q_name(queue_name):  # a delay queue: no step wakes it
            return consume(queue_name, prefetch, timeout)
        # made with no idle timeout, Dramatiq's consumer never sleeps: WakingConsumer waits
        consumer = consume(queue_name, prefetch, 0)
        if not hasattr(consumer, "outstanding_message_count"):
            consumer.close()
            return consume(queue_name, prefetch, timeout)
        return WakingConsumer(consumer, broker, wake_channel(broker, queue_name), timeout)

    broker.consume = waking_consume  # type: ignore[method-assign]


def calm_idle_threads(worker: Any) -> None:
    """Make the threads of a started `dramatiq.Worker` wait at least `IDLE_THREAD_WAIT`
    for their next message; each still takes one the moment it is fetched."""
    for thread in getattr(worker, "workers", ()):
        if getattr(thread, "timeout", IDLE_THREAD_WAIT) < IDLE_THREAD_WAIT:
            thread.timeout = IDLE_THREAD_WAIT


def stop_waking(broker: dramatiq.Broker) -> None:
    """Undo `wake_consumers`: consumers created from now on sleep as Dramatiq's do."""
    vars(broker).pop("consume", None)


class WakingConsumer(Consumer):
    """A Redis consumer that spends its idle back-off listening for wakes, and sends the
    acks of workflow steps with its next fetch.

    Parameters:
      consumer: Dramatiq's consumer for the queue, made with no idle timeout.
      broker(RedisBroker): the broker that made it.
      channel(str): the queue's wake channel.
      timeout(int): the longest wait, in milliseconds (the worker's `worker_timeout`).
    """

    def __init__(self, consumer: Any, broker: RedisBroker, channel: str, timeout: int) -> None:
        self.consumer, self.broker, self.timeout = consumer, broker, timeout
        #: fetches in a row that found nothing: the back-off grows with them, as Dramatiq's
        self.misses = 0
        #: the redis ids of acked steps, waiting for the next fetch
        self.held: list[str] = []
        #: whether acks can ride with fetches: the fetch is Dramatiq's own, so this needs
        #: the script it dispatches through and the cache its consumer fetches into
        self._can_hold = can_pipeline(broker) and hasattr(consumer, "message_cache")
        self._holding = self._can_hold
        self._held_lock = threading.Lock()
        self.wakes = broker.client.pubsub()
        try:
            self.wakes.subscribe(channel)
            self.wakes.get_message(timeout=SUBSCRIBED_WITHIN)  # the confirmation
        except redis.ConnectionError as e:
            self.wakes.close()
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]
        self._drain_at = time.monotonic() + DRAIN_EVERY

    def __next__(self) -> MessageProxy | None:
        if self.held and not self.consumer.message_cache:
            message = self._ack_and_fetch()  # Dramatiq's consumer would fetch now
        else:
            message = next(self.consumer)
        if message is not None:
            self.misses = 0
        else:
            self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
            if backoff_ms > 0:
                self.wait(backoff_ms / 1000)
        # A consumer that is never idle, or never free to fetch, never listens: read off
        # what it missed now and then. Each was for a message enqueued before it, which
        # the fetch before its next wait will see.
        if time.monotonic() >= self._drain_at:
            self._drain()
        return message

    def wait(self, seconds: float) -> None:
        """Wait up to `seconds`, or until a step is enqueued for this queue."""
        if self.consumer.outstanding_message_count >= self.consumer.prefetch:
            time.sleep(seconds)  # every prefetched message still runs: a wake could not fetch
            return
        self._send_held(holding=False)  # nothing to fetch: no ack waits for a fetch
        try:
            if self._hear(seconds):
                self._drain()  # the wakes heard since are for messages the next fetch will see
        finally:
            self._holding = self._can_hold

    def _drain(self) -> None:
        while self._hear(0.0):
            pass
        self._drain_at = time.monotonic() + DRAIN_EVERY

    def _hear(self, seconds: float) -> bool:
        """Whether a wake came within `seconds`."""
        try:
            return self.wakes.get_message(timeout=seconds) is not None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]

    def _ack_and_fetch(self) -> MessageProxy | None:
        """Send the held acks with the fetch Dramatiq's consumer would make, in one round
        trip; the first message fetched."""
        consumer = self.consumer
        with self._held_lock:
            held, self.held = self.held, []
        room = consumer.prefetch - consumer.outstanding_message_count
        replies = self._send(held, fetch=room)
        if room <= 0:
            return None
        consumer.message_cache = replies[-1]
        return next(consumer) if consumer.message_cache else None

    def _send_held(self, *, holding: bool) -> None:
        """Send the held acks now; and from now on hold acks, or send each at once."""
        with self._held_lock:
            held, self.held = self.held, []
            self._holding = holding and self._can_hold
        if held:
            self._send(held, fetch=0)

    def _send(self, acks: list[str], *, fetch: int) -> list[Any]:
        """Send `acks`, and a fetch of up to `fetch` messages if it is positive, in one
        round trip; Redis's replies. Acks that may not have gone out are held again."""
        queue_name = self.consumer.queue_name

        def calls(dispatching: RedisBroker, _pipe: redis.client.Pipeline) -> None:
            for redis_id in acks:
                dispatching.do_ack(queue_name, redis_id)
            if fetch > 0:
                dispatching.do_fetch(queue_name, fetch)

        try:
            return in_one_round_trip(self.broker, calls)
        except redis.ConnectionError as e:
            with self._held_lock:
                self.held[:0] = acks  # an ack is idempotent: it goes again with the next
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]

    def ack(self, message: MessageProxy) -> None:
        if STEP_OPTION in message.options:
            with self._held_lock:
                holding = self._holding
                if holding:
                    self.held.append(message.options["redis_message_id"])
            if holding:
                self.consumer.queued_message_ids.discard(message.message_id)
                return
        self.consumer.ack(message)

    def nack(self, message: MessageProxy) -> None:
        self.consumer.nack(message)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        self.consumer.requeue(messages)

    def close(self) -> None:
        try:
            self._send_held(holding=False)
        except ConnectionClosed:
            # they stay in this worker's set of unacked messages, which Redis hands to
            # another worker once this one is gone, and the store skips completed steps
            logger.warning("Could not send %d held ack(s) on close", len(self.held))
        finally:
            try:
                self.wakes.close()
            finally:
                self.consumer.close()
