"""Counting, and failing, the pipelines a Redis client sends."""

from __future__ import annotations

from typing import Any

from dramatiq.brokers.redis import RedisBroker


class CountedPipelines:
    """Wraps a Redis client's `pipeline`: counts the pipelines executed and notes how many
    commands each held (`sizes`), and fails the execution numbered `fail_at` (from 1)
    when set, raising `error`, before it is sent."""

    def __init__(
        self,
        broker: RedisBroker,
        fail_at: int | None = None,
        error: type[Exception] = ConnectionError,
    ) -> None:
        self.executed, self.fail_at = 0, fail_at
        self.sizes: list[int] = []
        make = broker.client.pipeline

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = make(*args, **kwargs)
            execute = pipe.execute

            def counted(*a: Any, **k: Any) -> Any:
                self.executed += 1
                self.sizes.append(len(pipe.command_stack))
                if self.executed == self.fail_at:
                    raise error("the connection dropped")
                return execute(*a, **k)

            pipe.execute = counted
            return pipe

        broker.client.pipeline = pipeline
