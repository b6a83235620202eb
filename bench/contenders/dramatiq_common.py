"""Pieces shared by the Dramatiq-based contenders: broker, namespaced backends, results."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.rate_limits.backends import RedisBackend as RateLimiterRedisBackend
from dramatiq.results.backends import RedisBackend as ResultsRedisBackend

from ..config import AppConfig

#: how long a fan-in step waits for a result that Dramatiq stores after enqueueing it
RESULT_WAIT_MS = 10_000


def redis_broker(cfg: AppConfig) -> RedisBroker:
    """The same broker for every Dramatiq contender: RedisBroker, default middleware."""
    return RedisBroker(url=cfg.redis_url, namespace=cfg.namespace)


def results_backend(cfg: AppConfig) -> ResultsRedisBackend:
    """Dramatiq's Redis result backend, its keys inside the contender's namespace."""
    return ResultsRedisBackend(
        url=cfg.redis_url, namespace=f"{cfg.namespace}:results", use_namespace_prefix_keys=True
    )


class PrefixedRateLimiterBackend(RateLimiterRedisBackend):
    """Dramatiq's Redis rate-limiter backend (barriers) with every key under a prefix.

    Group callbacks and dramatiq-workflow name their barriers by bare UUIDs; the prefix
    keeps them inside the contender's namespace so the harness can delete them.
    """

    def __init__(self, *, url: str, prefix: str) -> None:
        super().__init__(url=url)
        self.prefix = prefix

    def add(self, key: str, value: Any, ttl: int) -> bool:
        return super().add(self.prefix + key, value, ttl)

    def incr(self, key: str, amount: int, maximum: int, ttl: int) -> bool:
        return super().incr(self.prefix + key, amount, maximum, ttl)

    def decr(self, key: str, amount: int, minimum: int, ttl: int) -> bool:
        return super().decr(self.prefix + key, amount, minimum, ttl)

    def incr_and_sum(self, key: str, keys: Any, amount: int, maximum: int, ttl: int) -> bool:
        def prefixed() -> list[str]:
            return [self.prefix + k for k in keys()]

        return super().incr_and_sum(self.prefix + key, prefixed, amount, maximum, ttl)

    def wait(self, key: str, timeout: int | None) -> bool:
        return super().wait(self.prefix + key, timeout)

    def wait_notify(self, key: str, ttl: int) -> None:
        super().wait_notify(self.prefix + key, ttl)


def rate_limiter_backend(cfg: AppConfig) -> PrefixedRateLimiterBackend:
    return PrefixedRateLimiterBackend(url=cfg.redis_url, prefix=f"{cfg.namespace}:barrier:")


def result_of(
    backend: ResultsRedisBackend, actor_name: str, message_id: str, queue_name: str = "default"
) -> Any:
    """The stored result of message `message_id` of `actor_name`, waiting for it if need be."""
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue_name,
        actor_name=actor_name,
        args=(),
        kwargs={},
        options={},
        message_id=message_id,
    )
    return backend.get_result(message, block=True, timeout=RESULT_WAIT_MS)
