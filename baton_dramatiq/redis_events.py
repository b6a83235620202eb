"""RedisEventBus: progress events over Redis pub/sub.

The wire format is a JSON object ``{"event": ..., "payload": {...}}`` on the channels
``workflow:all`` and ``workflow:<id>`` (with an optional prefix).
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
import redis.asyncio as aredis

from .events import (
    ALL_TOPIC,
    AsyncRawSubscription,
    Event,
    EventBus,
    RawSubscription,
    workflow_topic,
)


def _decode(message: dict[str, Any] | None) -> Event | None:
    if message is None or message.get("type") != "message":
        return None
    try:
        data = json.loads(message["data"])
        return Event(data["event"], data["payload"])
    except (ValueError, KeyError, TypeError):
        return None  # not ours: ignore


#: publishes a batch of events, each to the channel ARGV[1] (``workflow:all``) and then to
#: its own: ARGV[2k] names that channel, ARGV[2k + 1] is the event. One command in all,
#: where a PUBLISH each cost the worker's GIL a command's packing and reply apiece
PUBLISH_BATCH = """
local everyone = ARGV[1]
for i = 2, #ARGV, 2 do
    redis.call('PUBLISH', everyone, ARGV[i + 1])
    redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
"""


class RedisEventBus(EventBus):
    """Publishes events with Redis PUBLISH; subscribers use SUBSCRIBE.

    Parameters:
      url(str): the Redis URL.
      prefix(str): prepended to every channel name (empty by default).
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "") -> None:
        self.url = url
        self.prefix = prefix
        self.client = redis.Redis.from_url(url)
        self._publish_batch = self.client.register_script(PUBLISH_BATCH)

    def __repr__(self) -> str:
        return f"RedisEventBus({self.url!r}, prefix={self.prefix!r})"

    def channel(self, topic: str) -> str:
        return self.prefix + topic

    def publish(self, workflow_id: str, events: list[Event]) -> None:
        self.publish_many([(workflow_id, events)])

    def publish_many(self, batch: list[tuple[str, list[Event]]]) -> None:
        """One command for the lot; each event goes to ``workflow:all``, then its topic."""
        args = [self.channel(ALL_TOPIC)]
        for workflow_id, events in batch:
            topic = self.channel(workflow_topic(workflow_id))
            for event in events:
                args.append(topic)
                args.append(
                    json.dumps(
                        {"event": event.event, "payload": event.payload}, separators=(",", ":")
                    )
                )
        if len(args) > 1:
            self._publish_batch(args=args)

    def subscribe(self, topics: list[str]) -> RawSubscription:
        return _RedisSubscription(self, [self.channel(t) for t in topics])

    async def asubscribe(self, topics: list[str]) -> AsyncRawSubscription:
        sub = _AsyncRedisSubscription(self.url, [self.channel(t) for t in topics])
        await sub.connect()
        return sub

    def close(self) -> None:
        self.client.close()


class _RedisSubscription(RawSubscription):
    def __init__(self, bus: RedisEventBus, channels: list[str]) -> None:
        self._bus, self._channels = bus, channels
        self._pubsub = self._connect()

    def _connect(self) -> Any:
        pubsub = self._bus.client.pubsub()  # type: ignore[no-untyped-call, unused-ignore]
        pubsub.subscribe(*self._channels)
        # live on return: wait for the server to confirm every channel
        confirmed, deadline = 0, time.monotonic() + 10
        while confirmed < len(self._channels) and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1.0)
            if message is not None and message.get("type") == "subscribe":
                confirmed += 1
        return pubsub

    def get(self, timeout: float | None) -> Event | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                event = _decode(self._pubsub.get_message(timeout=1.0 if left is None else left))
            except (redis.ConnectionError, redis.TimeoutError):
                self.lost = True
                time.sleep(0.1)
                try:
                    self._pubsub.close()
                    self._pubsub = self._connect()
                except redis.RedisError:
                    pass
                continue
            if event is not None:
                return event
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        try:
            self._pubsub.close()
        except redis.RedisError:
            pass


class _AsyncRedisSubscription(AsyncRawSubscription):
    def __init__(self, url: str, channels: list[str]) -> None:
        self._client = aredis.Redis.from_url(url)
        self._channels = channels
        self._pubsub: Any = None

    async def connect(self) -> None:
        self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(*self._channels)
        confirmed, deadline = 0, time.monotonic() + 10
        while confirmed < len(self._channels) and time.monotonic() < deadline:
            message = await self._pubsub.get_message(timeout=1.0)
            if message is not None and message.get("type") == "subscribe":
                confirmed += 1

    async def get(self, timeout: float | None) -> Event | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                message = await self._pubsub.get_message(timeout=1.0 if left is None else left)
            except (redis.ConnectionError, redis.TimeoutError):
                self.lost = True
                await _sleep(0.1)
                try:
                    await self.connect()
                except redis.RedisError:
                    pass
                continue
            event = _decode(message)
            if event is not None:
                return event
            if deadline is not None and time.monotonic() >= deadline:
                return None

    async def aclose(self) -> None:
        try:
            if self._pubsub is not None:
                await self._pubsub.aclose()
            await self._client.aclose()
        except redis.RedisError:
            pass


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
