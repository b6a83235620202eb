"""Ready steps on their way to the broker: batched on Redis, whole and in order."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import sqlalchemy as sa
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

import baton_dramatiq as baton
from baton_dramatiq.setup import STEP_OPTION
from baton_dramatiq.wakeup import wake_channel
from baton_dramatiq.workflow import ENQUEUE_BATCH, FIRST_BATCH, enqueue_steps
from tests.support import services
from tests.support.cluster import wait_for
from tests.support.messages import step_messages
from tests.support.pipelines import CountedPipelines


class EnqueueHooks(dramatiq.Middleware):
    """Notes the message ids every enqueue hook saw, in order."""

    def __init__(self) -> None:
        self.before: list[str] = []
        self.after: list[str] = []

    def before_enqueue(self, broker: dramatiq.Broker, message: Any, delay: Any) -> None:
        self.before.append(message.message_id)

    def after_enqueue(self, broker: dramatiq.Broker, message: Any, delay: Any) -> None:
        self.after.append(message.message_id)


@pytest.fixture
def redis_broker() -> Iterator[tuple[RedisBroker, EnqueueHooks, str]]:
    namespace = services.new_namespace()
    broker = RedisBroker(url=services.REDIS_URL, namespace=namespace)
    hooks = EnqueueHooks()
    broker.add_middleware(hooks)
    dramatiq.actor(lambda: None, actor_name="noop", broker=broker)
    try:
        yield broker, hooks, namespace
    finally:
        broker.close()
        services.drop_namespace(namespace)


def queued(broker: RedisBroker, namespace: str) -> list[dict[str, Any]]:
    """The messages waiting on the default queue, in queue order."""
    ids = broker.client.lrange(f"{namespace}:default", 0, -1)
    bodies = broker.client.hmget(f"{namespace}:default.msgs", ids) if ids else []
    return [json.loads(body) for body in bodies]


def test_a_fan_out_goes_to_redis_a_batch_a_round_trip_each_message_whole_and_in_order(
    redis_broker: tuple[RedisBroker, EnqueueHooks, str],
) -> None:
    broker, hooks, namespace = redis_broker
    messages = step_messages(2 * ENQUEUE_BATCH + 20)
    pipelines = CountedPipelines(broker)
    sent_from = int(time.time() * 1000)

    enqueue_steps(broker, messages)

    # one round trip a batch: a small first one, then full ones, the last partly filled;
    # each batch's messages, then one wake for their queue
    last = len(messages) - FIRST_BATCH - 2 * ENQUEUE_BATCH
    assert pipelines.sizes == [FIRST_BATCH + 1, ENQUEUE_BATCH + 1, ENQUEUE_BATCH + 1, last + 1]
    # every message once, in order, whole, stamped at its enqueue, with its own Redis id
    on_queue = queued(broker, namespace)
    ids = [m["message_id"] for m in messages]
    assert [m["message_id"] for m in on_queue] == ids
    assert [m["options"][STEP_OPTION] for m in on_queue] == [["wf", f"n{i}"] for i in range(120)]
    assert all(m["message_timestamp"] >= sent_from for m in on_queue)
    assert len({m["options"]["redis_message_id"] for m in on_queue}) == len(messages)
    # and the broker's middleware saw each enqueue, before and after
    assert hooks.before == ids and hooks.after == ids


def test_a_failed_batch_raises_and_sends_nothing_after_it(
    redis_broker: tuple[RedisBroker, EnqueueHooks, str],
) -> None:
    broker, _, namespace = redis_broker
    messages = step_messages(3 * ENQUEUE_BATCH)
    CountedPipelines(broker, fail_at=2)

    with pytest.raises(ConnectionError):
        enqueue_steps(broker, messages)

    # the first batch is out; the rest stays available in the store for the Sweeper
    on_queue = queued(broker, namespace)
    assert [m["message_id"] for m in on_queue] == [m["message_id"] for m in messages[:FIRST_BATCH]]


def test_a_single_step_goes_out_in_one_round_trip_with_its_wake(
    redis_broker: tuple[RedisBroker, EnqueueHooks, str],
) -> None:
    broker, hooks, namespace = redis_broker
    pipelines = CountedPipelines(broker)
    [message] = step_messages(1)

    enqueue_steps(broker, [message])

    assert pipelines.executed == 1
    assert [m["message_id"] for m in queued(broker, namespace)] == [message["message_id"]]
    assert hooks.after == [message["message_id"]]


def test_other_brokers_get_each_step_through_their_own_enqueue() -> None:
    stub = StubBroker()
    hooks = EnqueueHooks()
    stub.add_middleware(hooks)
    dramatiq.actor(lambda: None, actor_name="noop", broker=stub)
    messages = step_messages(3)

    enqueue_steps(stub, messages)

    assert stub.queues["default"].qsize() == 3
    assert hooks.after == [m["message_id"] for m in messages]


def test_a_batch_redis_has_lost_the_script_for_goes_out_once_the_script_is_loaded(
    redis_broker: tuple[RedisBroker, EnqueueHooks, str],
) -> None:
    # Given a Redis that has forgotten Dramatiq's scripts, as after a restart
    broker, _, namespace = redis_broker
    broker.client.script_flush()
    pipelines = CountedPipelines(broker)
    messages = step_messages(3)

    enqueue_steps(broker, messages)

    # the batch was refused whole, then sent again, whole and once
    assert pipelines.executed == 2
    assert [m["message_id"] for m in queued(broker, namespace)] == [
        m["message_id"] for m in messages
    ]


def test_the_sweeper_re_enqueues_overdue_steps_in_batches_with_new_ids_and_wakes(
    redis_broker: tuple[RedisBroker, EnqueueHooks, str], tmp_path: Path
) -> None:
    # Given 60 ready steps whose messages were lost, overdue for an hour
    broker, _, namespace = redis_broker
    lost = baton.workflow_actor(broker=broker, actor_name="lost")(lambda: None)
    store = baton.Store(f"sqlite:///{tmp_path / 'baton.db'}")
    baton.migrations.upgrade(store)
    wf = baton.Workflow(name="lost")
    for i in range(ENQUEUE_BATCH + 10):
        wf.add(f"s{i}", lost.message())
    store.insert_workflow(*wf._rows(wf.validate(broker)))
    with store.connect() as conn:
        n = store.nodes
        conn.execute(sa.update(n).values(due_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)))
    stored_ids = {step.message.message_id for step in wf.steps}
    listener = broker.client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(wake_channel(broker, "default"))
    pipelines = CountedPipelines(broker)

    # When the Sweeper rescues them
    report = baton.Sweeper(store, rescue_after=60).sweep_once(broker)

    # Then they go out a batch a round trip, each once, under a new message id
    assert report.rescued == ENQUEUE_BATCH + 10
    assert pipelines.executed == 2
    on_queue = queued(broker, namespace)
    assert sorted(m["options"][STEP_OPTION][1] for m in on_queue) == sorted(
        step.name for step in wf.steps
    )
    assert not {m["message_id"] for m in on_queue} & stored_ids
    # and idle consumers of their queue are woken
    assert wait_for(lambda: listener.get_message(timeout=0.1), timeout=5) is not None
    listener.close()
    store.dispose()
