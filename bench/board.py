"""The finish line every contender's fan-in step crosses: one Redis hash per namespace.

Each contender's fan-in step ends with ``board.record(key)``, which stores
``time.time()`` under the diamond's key (one HSET, the same for everyone). The harness
waits until the hash holds as many keys as it submitted, then reads the times: latency
is finish minus the harness's submit time of that diamond (same machine, same clock).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis


class Board:
    def __init__(self, redis_url: str, namespace: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.key = f"{namespace}:bench:done"

    def record(self, item: str) -> None:
        """Called by a fan-in step: `item` finished now."""
        self.client.hset(self.key, item, repr(time.time()))

    def count(self) -> int:
        return int(self.client.hlen(self.key))

    def wait(
        self,
        count: int,
        timeout: float,
        *,
        check: Callable[[], None] | None = None,
        interval: float = 0.002,
    ) -> None:
        """Block until `count` items finished; TimeoutError after `timeout` seconds.

        `check` (e.g. `Workers.check_alive`) is called twice a second and may raise.
        """
        deadline = time.monotonic() + timeout
        next_check = time.monotonic() + 0.5
        while (done := self.count()) < count:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"only {done} of {count} finished within {timeout:.0f} s")
            if check is not None and now > next_check:
                check()
                next_check = now + 0.5
            time.sleep(interval)

    def times(self) -> dict[str, float]:
        """``{item: finish time}``, wall-clock seconds."""
        return {k.decode(): float(v) for k, v in self.client.hgetall(self.key).items()}

    def reset(self) -> None:
        self.client.delete(self.key)

    def close(self) -> None:
        self.client.close()
