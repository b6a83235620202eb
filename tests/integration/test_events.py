"""Events: the wire format on Redis, asyncio subscriptions, and no doubles for viewers."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import redis

import baton_dramatiq as baton
from baton_dramatiq.events import Event, _Tracker
from tests.support import services
from tests.support.cluster import Cluster, PostgresCluster


def test_asyncio_subscribers_see_the_whole_workflow(cluster: Cluster) -> None:
    a = cluster.actors
    wf = (
        baton.Workflow(name="async-view")
        .add("one", a.echo.message(1))
        .add("two", a.echo.message(2), deps=["one"])
    )

    async def watch() -> list[baton.Event]:
        seen = []
        async with baton.events.asubscribe_workflow(wf.id, timeout=30) as stream:
            await asyncio.to_thread(wf.insert)
            async for event in stream:
                seen.append(event)
        return seen

    events = asyncio.run(watch())
    assert [(e.payload.get("step_name"), e.payload.get("state")) for e in events[:-1]] == [
        ("one", "executing"),
        ("one", "completed"),
        ("two", "executing"),
        ("two", "completed"),
    ]
    assert events[-1].event == "workflow_finished" and events[-1].payload["outcome"] == "completed"


def test_asyncio_replay_of_a_finished_workflow_ends_with_its_outcome(cluster: Cluster) -> None:
    run = baton.Workflow(name="async-replay").add("only", cluster.actors.echo.message(1)).insert()
    assert run.wait(timeout=30) == "completed"

    async def watch() -> list[baton.Event]:
        return [e async for e in baton.events.asubscribe_workflow(run.id, replay=True, timeout=5)]

    events = asyncio.run(watch())
    assert [e.event for e in events] == ["workflow_step_updated", "workflow_finished"]
    assert events[0].payload["state"] == "completed" and events[0].payload["version"] == 2


def test_the_redis_wire_format_is_plain_json_on_the_documented_channels(pg_template: str) -> None:
    cluster = PostgresCluster(processes=1, threads=2)
    client = redis.Redis.from_url(services.REDIS_URL)
    pubsub = client.pubsub()
    try:
        wf = baton.Workflow(name="wire").add("only", cluster.actors.echo.message("x"))
        prefix = cluster.namespace + ":"
        pubsub.subscribe(prefix + "workflow:all", prefix + f"workflow:{wf.id}")
        while (m := pubsub.get_message(timeout=5)) and m["type"] == "subscribe":
            if m["data"] == 2:
                break
        wf.insert()
        messages = []
        deadline = time.monotonic() + 30
        while len(messages) < 6 and time.monotonic() < deadline:
            m = pubsub.get_message(timeout=1)
            if m and m["type"] == "message":
                messages.append((m["channel"].decode(), json.loads(m["data"])))
        channels = [c for c, _ in messages]
        assert channels.count(prefix + "workflow:all") == 3
        assert channels.count(prefix + f"workflow:{wf.id}") == 3
        bodies = [body for channel, body in messages if channel.endswith("workflow:all")]
        assert [set(b) for b in bodies] == [{"event", "payload"}] * 3
        assert [b["event"] for b in bodies] == ["workflow_step_updated"] * 2 + ["workflow_finished"]
        assert set(bodies[0]["payload"]) == {
            "workflow_id",
            "workflow_name",
            "step_name",
            "state",
            "worker",
            "attempt",
            "has_result",
            "error",
            "at",
            "version",
        }
        assert set(bodies[-1]["payload"]) == {
            "workflow_id",
            "workflow_name",
            "outcome",
            "failed_steps",
            "at",
        }
    finally:
        pubsub.close()
        client.close()
        cluster.close()


def test_a_batch_of_events_goes_out_in_one_command_in_order_on_both_channels() -> None:
    prefix = f"batch-{uuid.uuid4().hex[:8]}:"
    bus = baton.RedisEventBus(services.REDIS_URL, prefix=prefix)
    commands: list[str] = []
    execute = bus.client.execute_command

    def counted(*args: Any, **options: Any) -> Any:
        commands.append(str(args[0]))
        return execute(*args, **options)

    bus.client.execute_command = counted  # type: ignore[method-assign]
    listener = redis.Redis.from_url(services.REDIS_URL)
    pubsub = listener.pubsub()
    try:
        pubsub.subscribe(prefix + "workflow:all", prefix + "workflow:w1", prefix + "workflow:w2")
        for _ in range(3):
            assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        bus.publish_many(
            [
                ("w1", [step("a", "executing", 1), step("a", "completed", 2)]),
                ("w2", [step("x", "executing", 1)]),
                ("w1", [Event("workflow_finished", {"workflow_id": "w1"})]),
            ]
        )
        bus.publish_many([])  # nothing to send: no command
        received = []
        while len(received) < 8 and (m := pubsub.get_message(timeout=5)) is not None:
            if m["type"] == "message":
                body = json.loads(m["data"])
                received.append(
                    (
                        m["channel"].decode().removeprefix(prefix),
                        body["event"],
                        body["payload"].get("state"),
                    )
                )
    finally:
        pubsub.close()
        listener.close()
        bus.close()
    assert commands == ["EVALSHA"]
    assert received == [
        ("workflow:all", "workflow_step_updated", "executing"),
        ("workflow:w1", "workflow_step_updated", "executing"),
        ("workflow:all", "workflow_step_updated", "completed"),
        ("workflow:w1", "workflow_step_updated", "completed"),
        ("workflow:all", "workflow_step_updated", "executing"),
        ("workflow:w2", "workflow_step_updated", "executing"),
        ("workflow:all", "workflow_finished", None),
        ("workflow:w1", "workflow_finished", None),
    ]


def step(name: str, state: str, version: int) -> Event:
    return Event("workflow_step_updated", {"step_name": name, "state": state, "version": version})


def test_a_viewer_never_sees_a_version_twice_or_an_older_one_after_a_newer() -> None:
    tracker = _Tracker("wf", store=None, replay=False)
    out = []
    for event in [
        step("a", "executing", 1),
        step("a", "executing", 1),
        step("a", "completed", 2),
        step("a", "executing", 1),
        step("b", "executing", 1),
    ]:
        out += tracker.accept(event, lost=False)
    assert [(e.payload["step_name"], e.payload["version"]) for e in out] == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
    ]


def test_a_repeated_workflow_finished_is_dropped() -> None:
    tracker = _Tracker("wf", store=None, replay=False)
    finished = Event("workflow_finished", {"workflow_id": "wf", "outcome": "completed"})
    assert tracker.accept(finished, lost=False) == [finished]
    assert tracker.accept(finished, lost=False) == []
    assert tracker.accept(step("a", "completed", 9), lost=False) == []
