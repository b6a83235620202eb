"""Idle Redis consumers are woken by the steps enqueued for them, on a real Redis."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name

from baton_dramatiq.wakeup import (
    IDLE_THREAD_WAIT,
    WakingConsumer,
    stop_waking,
    wake_channel,
    wake_consumers,
)
from baton_dramatiq.workflow import FIRST_BATCH, enqueue_steps
from tests.support.cluster import wait_for
from tests.support.consumers import consume_until_a_message, waking_consumer
from tests.support.in_process import workflow_worker
from tests.support.messages import step_messages


def listeners(broker: RedisBroker, queue_name: str = "default") -> int:
    channel = wake_channel(broker, queue_name)
    return int(dict(broker.client.pubsub_numsub(channel))[channel.encode()])


def test_a_consumer_deep_in_its_back_off_takes_a_step_as_soon_as_it_is_enqueued(
    broker: RedisBroker,
) -> None:
    # Given a consumer whose next idle wait would last 30-60 s
    consumer = waking_consumer(broker)
    consumer.misses = 20
    thread, received = consume_until_a_message(consumer)
    wait_for(lambda: consumer.misses == 21, timeout=5)  # it fetched, found nothing, waits

    # When a step is enqueued for its queue
    [message] = step_messages(1)
    enqueue_steps(broker, [message])

    # Then it wakes and fetches the step, long before its back-off would have ended
    thread.join(timeout=10)
    assert not thread.is_alive(), "the consumer slept through the step's enqueue"
    assert received[-1].message_id == message["message_id"]
    consumer.close()


def test_a_message_sent_without_a_workflow_is_still_fetched_after_the_back_off(
    broker: RedisBroker,
) -> None:
    wake_consumers(broker)
    consumer = broker.consume("default", prefetch=4, timeout=20)
    sent = broker.get_actor("noop").send()

    fetched = wait_for(lambda: next(consumer), timeout=5, interval=0)

    assert fetched.message_id == sent.message_id
    consumer.close()


def test_a_consumer_that_never_idles_reads_off_the_wakes_it_missed(broker: RedisBroker) -> None:
    # Given a consumer busy with messages while steps keep being enqueued
    wake_consumers(broker)
    consumer = broker.consume("default", prefetch=100, timeout=20)
    assert isinstance(consumer, WakingConsumer)
    wait_for(lambda: listeners(broker) == 1, timeout=5)
    for _ in range(5):
        enqueue_steps(broker, step_messages(1))
    connection = consumer.wakes.connection
    assert connection is not None and connection.can_read(timeout=1)

    # When it takes messages past its drain time
    consumer._drain_at = 0.0
    assert wait_for(lambda: next(consumer), timeout=5, interval=0) is not None

    # Then nothing is left unread on its connection: Redis holds no growing buffer for it
    assert not connection.can_read(timeout=0)
    consumer.close()


def test_a_consumer_with_every_prefetched_message_running_reads_off_the_wakes_too(
    broker: RedisBroker,
) -> None:
    # Given a consumer whose one prefetch slot is taken by a running message
    wake_consumers(broker)
    consumer = broker.consume("default", prefetch=1, timeout=20)
    assert isinstance(consumer, WakingConsumer)
    broker.get_actor("noop").send()
    assert wait_for(lambda: next(consumer), timeout=5, interval=0) is not None
    # When steps are enqueued while it cannot fetch, and its drain time comes
    for _ in range(5):
        enqueue_steps(broker, step_messages(1))
    connection = consumer.wakes.connection
    assert connection is not None and connection.can_read(timeout=1)
    consumer._drain_at = 0.0

    # Then it sleeps out its back-off, fetching nothing, and reads off the wakes
    assert next(consumer) is None
    assert not connection.can_read(timeout=0)
    assert broker.client.llen(f"{broker.namespace}:default") == 5
    consumer.close()


def test_a_batch_wakes_each_of_its_queues_once(broker: RedisBroker) -> None:
    listener = broker.client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(wake_channel(broker, "default"), wake_channel(broker, "other"))
    wait_for(lambda: listeners(broker, "other") == 1, timeout=5)

    other = step_messages(1, actor_name="elsewhere", queue_name="other")
    enqueue_steps(broker, step_messages(FIRST_BATCH - 1) + other)  # one batch, two queues

    heard = []
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        if (wake := listener.get_message(timeout=0.1)) is not None:
            heard.append(wake["channel"].decode())
    assert sorted(heard) == sorted([wake_channel(broker, "default"), wake_channel(broker, "other")])
    listener.close()


def test_delay_queues_and_other_brokers_keep_dramatiqs_own_consumers(
    broker: RedisBroker,
) -> None:
    wake_consumers(broker)
    delayed = broker.consume(dq_name("default"), prefetch=1, timeout=20)
    assert not isinstance(delayed, WakingConsumer)
    delayed.close()

    stub = StubBroker()
    wake_consumers(stub)
    assert "consume" not in vars(stub)


def test_waking_is_installed_once_and_undone(broker: RedisBroker) -> None:
    wake_consumers(broker)
    wake_consumers(broker)
    consumer = broker.consume("default", prefetch=1, timeout=20)
    assert isinstance(consumer, WakingConsumer)
    assert not isinstance(consumer.consumer, WakingConsumer)
    consumer.close()

    stop_waking(broker)

    plain = broker.consume("default", prefetch=1, timeout=20)
    assert not isinstance(plain, WakingConsumer)
    plain.close()


def test_a_worker_with_the_workflow_middleware_consumes_through_waking_consumers(
    broker: RedisBroker, tmp_path: Path
) -> None:
    # Given a worker booted on a RedisBroker with the middleware
    with workflow_worker(broker, tmp_path, threads=1, worker_timeout=200) as (_, worker):
        # Then its consumer of the default queue waits on the wake list
        thread = wait_for(lambda: worker.consumers.get("default"), timeout=5)
        consumer = wait_for(lambda: getattr(thread, "consumer", None), timeout=5)
        assert isinstance(consumer, WakingConsumer)
    # And once it stops, the broker's consumers are Dramatiq's own again
    assert "consume" not in vars(broker)


def test_idle_worker_threads_wait_for_a_message_without_waking_at_every_poll(
    broker: RedisBroker, tmp_path: Path
) -> None:
    # Given a worker whose consumers poll every 2 ms, with the middleware
    with workflow_worker(broker, tmp_path, threads=4, worker_timeout=2) as (_, worker):
        waits = []
        take = worker.work_queue.get

        def counted_take(*args: Any, **kwargs: Any) -> Any:
            waits.append(time.monotonic())
            return take(*args, **kwargs)

        worker.work_queue.get = counted_take  # type: ignore[method-assign]
        # When its four threads idle for half a second
        time.sleep(0.5)
        # Then each waited a few times, where Dramatiq's own wait ends every 2 ms
        assert len(waits) <= 4 * (0.5 / IDLE_THREAD_WAIT + 2)


def test_a_worker_that_polls_slowly_keeps_its_threads_own_wait(
    broker: RedisBroker, tmp_path: Path
) -> None:
    with workflow_worker(broker, tmp_path, threads=2, worker_timeout=1000) as (_, worker):
        assert [thread.timeout for thread in worker.workers] == [1.0, 1.0]
