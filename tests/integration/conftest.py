"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker

from baton_dramatiq.wakeup import stop_waking
from tests.support import services


@pytest.fixture
def broker() -> Iterator[RedisBroker]:
    """A RedisBroker in a namespace of its own, with a no-op actor on the default queue
    and one on queue "other"."""
    namespace = services.new_namespace()
    broker = RedisBroker(url=services.REDIS_URL, namespace=namespace)
    dramatiq.actor(lambda: None, actor_name="noop", broker=broker)
    dramatiq.actor(lambda: None, actor_name="elsewhere", queue_name="other", broker=broker)
    try:
        yield broker
    finally:
        stop_waking(broker)
        broker.close()
        services.drop_namespace(namespace)
