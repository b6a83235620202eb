"""A busy consumer sends the acks of workflow steps with its next fetch, on a real Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import ConnectionClosed

import baton_dramatiq as baton
from baton_dramatiq.workflow import enqueue_steps
from tests.support.cluster import wait_for
from tests.support.consumers import ONE_MINUTE_MS, consume_until_a_message, waking_consumer
from tests.support.in_process import workflow_worker
from tests.support.messages import step_messages
from tests.support.pipelines import CountedPipelines


def unacked(broker: RedisBroker, queue_name: str = "default") -> set[str]:
    """The redis ids of the messages this broker's worker fetched and has not acked."""
    key = f"{broker.namespace}:__acks__.{broker.broker_id}.{queue_name}"
    return {member.decode() for member in broker.client.smembers(key)}


def redis_id(message: Any) -> str:
    return str(message.options["redis_message_id"])


def test_a_steps_ack_goes_out_with_the_next_fetch_in_one_round_trip(broker: RedisBroker) -> None:
    # Given a consumer that fetched two steps
    consumer = waking_consumer(broker)
    enqueue_steps(broker, step_messages(2))
    first = next(consumer)
    pipelines = CountedPipelines(broker)

    # When it acks them while the second is still in its cache
    consumer.ack(first)
    second = next(consumer)
    consumer.ack(second)

    # Then nothing has been sent yet
    assert pipelines.executed == 0
    assert unacked(broker) == {redis_id(first), redis_id(second)}

    # And the fetch that follows sends both acks with it, in one round trip
    enqueue_steps(broker, step_messages(1))
    pipelines.executed = 0
    third = next(consumer)
    assert third is not None
    assert pipelines.executed == 1
    assert unacked(broker) == {redis_id(third)}
    consumer.close()


def test_a_plain_messages_ack_goes_out_at_once(broker: RedisBroker) -> None:
    consumer = waking_consumer(broker)
    broker.get_actor("noop").send()
    message = wait_for(lambda: next(consumer), timeout=5, interval=0)

    consumer.ack(message)

    assert unacked(broker) == set()
    assert consumer.held == []
    consumer.close()


def test_a_consumer_going_idle_sends_what_it_holds_and_acks_at_once_while_idle(
    broker: RedisBroker,
) -> None:
    # Given a consumer holding the ack of one step, with a second step in its cache
    consumer = waking_consumer(broker)
    enqueue_steps(broker, step_messages(2))
    first, second = next(consumer), next(consumer)
    consumer.ack(first)
    assert consumer.held == [redis_id(first)]

    # When it finds its queue empty and waits, 30-60 s, for a wake
    consumer.misses = 20
    thread, _ = consume_until_a_message(consumer)
    # (the wake of the first two steps may end its first wait at once)
    wait_for(lambda: consumer.misses >= 21, timeout=5)

    # Then the ack it held is out, and an ack that comes while it waits goes out long
    # before the wait ends (it may come just before a wait starts, which sends it then)
    wait_for(lambda: redis_id(first) not in unacked(broker), timeout=5)
    consumer.ack(second)
    wait_for(lambda: unacked(broker) == set(), timeout=5)
    assert consumer.held == []

    enqueue_steps(broker, step_messages(1))  # wakes it
    thread.join(timeout=10)
    assert not thread.is_alive()
    consumer.close()


def test_closing_sends_the_acks_it_holds(broker: RedisBroker) -> None:
    consumer = waking_consumer(broker)
    enqueue_steps(broker, step_messages(2))
    first, second = next(consumer), next(consumer)
    consumer.ack(first)
    consumer.ack(second)
    assert len(unacked(broker)) == 2

    consumer.close()

    assert unacked(broker) == set()


def test_acks_held_through_a_dropped_connection_go_out_with_the_fetch_after(
    broker: RedisBroker,
) -> None:
    # Given a held ack, and a connection that drops on the fetch that would send it
    consumer = waking_consumer(broker)
    enqueue_steps(broker, step_messages(1))
    first = next(consumer)
    consumer.ack(first)
    CountedPipelines(broker, fail_at=1, error=redis.ConnectionError)

    # When that fetch fails, as Dramatiq's would
    with pytest.raises(ConnectionClosed):
        next(consumer)

    # Then the ack is still held, and the next fetch sends it
    assert consumer.held == [redis_id(first)]
    assert next(consumer) is None
    assert unacked(broker) == set()
    consumer.close()


def test_a_worker_leaves_no_message_unacked_once_it_stops(
    broker: RedisBroker, tmp_path: Path
) -> None:
    # Given a worker on a RedisBroker with the middleware, which holds its steps' acks
    echo = baton.workflow_actor(broker=broker, actor_name="echo")(lambda value: value)
    with workflow_worker(broker, tmp_path, threads=4, worker_timeout=ONE_MINUTE_MS) as (
        store,
        _,
    ):
        # When it runs a fan-out of 20 steps to the end
        wf = baton.Workflow(name="fan").add("first", echo.message(0))
        for i in range(20):
            wf.add(f"middle{i}", echo.message(i), deps=["first"])
        run = wf.insert(broker=broker, store=store)
        assert run.wait(timeout=30) == "completed"

    # Then every message it fetched was acked by the time it stopped
    assert list(broker.client.scan_iter(f"{broker.namespace}:__acks__.*")) == []
