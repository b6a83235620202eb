"""Several of a RedisBroker's operations in one round trip.

Dramatiq's RedisBroker does every operation on a queue (enqueue, fetch, ack, ...) through
one Lua script, `dispatch`, and each call is a round trip. `in_one_round_trip` runs
Dramatiq's own code for each operation on a copy of the broker whose script waits on a
pipeline, then sends the pipeline: the messages, ids, timestamps and enqueue hooks are
exactly Dramatiq's, and only the round trips are fewer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker


def can_pipeline(broker: object) -> bool:
    """Whether `broker` is a RedisBroker that dispatches through Dramatiq's script."""
    return isinstance(broker, RedisBroker) and "dispatch" in broker.scripts


def in_one_round_trip(
    broker: RedisBroker, calls: Callable[[RedisBroker, redis.client.Pipeline], None]
) -> list[Any]:
    """Queue `calls` (made on a pipelining copy of `broker`, and on the pipeline itself)
    and send them in one round trip; what each command returned, in order.

    Raises what Redis raised. If Redis had lost the script (a restart, `SCRIPT FLUSH`),
    none of the calls ran: the script is loaded and `calls` are made and sent again, once.
    """
    try:
        return _send(broker, calls)
    except redis.exceptions.NoScriptError:
        broker.client.script_load(broker.scripts["dispatch"].script)
        return _send(broker, calls)


def _send(
    broker: RedisBroker, calls: Callable[[RedisBroker, redis.client.Pipeline], None]
) -> list[Any]:
    with broker.client.pipeline(transaction=False) as pipe:
        calls(_dispatching_on(broker, pipe), pipe)
        return pipe.execute()


def _dispatching_on(broker: RedisBroker, pipe: redis.client.Pipeline) -> RedisBroker:
    """A shallow copy of `broker` whose Lua dispatch script waits on `pipe`.

    It shares the broker's middleware, actors and connections: `enqueue` on it builds
    each message and runs the middleware's enqueue hooks as ever, and only its one call
    to Redis is queued on the pipeline, by the script's hash alone: a script object on
    a pipeline would cost a round trip of its own to check that Redis has it. (Were a
    Dramatiq release to stop reading the script from `scripts`, the copy would call
    Redis itself: slower, as right; without the script there, `can_pipeline` is false.)
    """
    sha = broker.scripts["dispatch"].sha

    def dispatch(keys: list[str], args: list[Any]) -> Any:
        return pipe.evalsha(sha, len(keys), *keys, *args)

    batched = copy.copy(broker)
    batched.scripts = {**broker.scripts, "dispatch": dispatch}
    return batched
