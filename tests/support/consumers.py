"""Waking Redis consumers as the wake and held-ack tests drive them, outside a worker."""

from __future__ import annotations

import threading
from typing import Any

from dramatiq.brokers.redis import RedisBroker

from baton_dramatiq.wakeup import WakingConsumer, wake_consumers

#: an idle timeout no test waits out: a consumer that is not woken fails its test
ONE_MINUTE_MS = 60_000


def waking_consumer(broker: RedisBroker, prefetch: int = 4) -> WakingConsumer:
    """A consumer of the queue ``default`` that waits up to a minute between fetches."""
    wake_consumers(broker)
    consumer = broker.consume("default", prefetch=prefetch, timeout=ONE_MINUTE_MS)
    assert isinstance(consumer, WakingConsumer)
    return consumer


def consume_until_a_message(consumer: WakingConsumer) -> tuple[threading.Thread, list[Any]]:
    """Start a thread that takes from `consumer` until it yields a message; the thread,
    and what it took so far (Nones, then the message)."""
    received: list[Any] = []

    def consume() -> None:
        while not received or received[-1] is None:
            received.append(next(consumer))

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    return thread, received
