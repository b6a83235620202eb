"""`workflow_actor`: a Dramatiq actor that can run as a workflow step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, overload

import dramatiq

from .context import _running
from .errors import BatonError, Snooze

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True, slots=True)
class Snoozed:
    """What a step's run returns to the middleware when the step raised `Snooze`."""

    seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class Discarded:
    """A step's run raised an error that no retry can fix (``retryable = False``)."""

    error: BaseException


class WorkflowActor(dramatiq.Actor):  # type: ignore[type-arg]
    """A Dramatiq actor whose runs inside a workflow can snooze without spending a retry.

    Run as a step, its return value goes to the WorkflowMiddleware (to be stored as the
    step's result), not to Dramatiq. Called directly it is an ordinary actor.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        running = _running.get()
        if running is None or running.actor_name != self.actor_name:
            return super().__call__(*args, **kwargs)
        try:
            running.outcome = super().__call__(*args, **kwargs)
        except Snooze as snooze:
            # Kept, not raised: an exception would reach Retries and spend a retry.
            running.outcome = Snoozed(snooze.seconds)
        except BatonError as error:
            if error.retryable:
                raise
            running.outcome = Discarded(error)  # e.g. a budget: retrying cannot help
        return None


@overload
def workflow_actor(fn: F) -> WorkflowActor: ...


@overload
def workflow_actor(fn: None = None, **options: Any) -> Callable[[F], WorkflowActor]: ...


def workflow_actor(fn: Any = None, **options: Any) -> Any:
    """Declare an actor that can be a workflow step; takes every `dramatiq.actor` option.

    The function's return value is the step's result: JSON, at most the middleware's
    `max_result_bytes`.

    Examples:
      >>> @workflow_actor(queue_name="default", max_retries=3)
      ... def fetch_sources(topic): ...
    """
    options.setdefault("actor_class", WorkflowActor)
    if fn is None:
        return lambda f: dramatiq.actor(f, **options)
    return dramatiq.actor(fn, **options)
