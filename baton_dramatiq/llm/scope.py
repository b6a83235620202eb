"""Where a call is made: the step (or replay) it belongs to, and its place in that run.

Inside a step, one `Scope` lives in the run's `RunningStep.extras`: it numbers the
run's calls in the order they start (a call's *position*), knows the step's model and
budget, and reads the workflow's budget once. `replay` sets a scope of its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..context import running_step
from .actor import ACTOR_KEY, DEFAULT_MAX_TOKENS

if TYPE_CHECKING:
    from ..store import Store

SCOPE_KEY = "baton_dramatiq.llm.scope"

_UNREAD = object()


@dataclasses.dataclass(eq=False)
class Scope:
    """The step run (or replay) that LLM calls are made for.

    Attributes:
      replay(bool): a replay: no answer is reused, and nothing is held on the step.
    """

    store: Store
    workflow_id: str
    step_name: str
    attempt: int
    default_model: str | None = None
    step_limit: float | None = None
    capture: bool = True
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    replay: bool = False
    reclaimed: bool = False
    #: numbers the calls; never held across I/O
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    #: held by the run's first reservation, which gives back what a dead run held
    reclaim_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    _next: int = 0
    _workflow_limit: Any = _UNREAD

    def next_position(self) -> int:
        """The position of a call starting now: 0 for the run's first, then 1, 2, ..."""
        with self.lock:
            position, self._next = self._next, self._next + 1
        return position

    def workflow_limit(self) -> float | None:
        """The workflow's ``max_cost_usd``, read once per run."""
        if self._workflow_limit is _UNREAD:
            self._workflow_limit = self.store.llm_budget(self.workflow_id)
        limit: float | None = self._workflow_limit
        return limit


_replaying: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "baton_llm_replay", default=None
)


def current_scope() -> Scope | None:
    """The scope of the running step or replay; None outside both."""
    replaying = _replaying.get()
    if replaying is not None:
        return replaying
    running = running_step()
    if running is None:
        return None
    scope: Scope | None = running.extras.get(SCOPE_KEY)
    if scope is None:
        actor = running.extras.get(ACTOR_KEY)
        message_model = running.kwargs.get("model")
        ctx = running.context
        scope = running.extras.setdefault(
            SCOPE_KEY,
            Scope(
                store=running.store,
                workflow_id=ctx.workflow_id,
                step_name=ctx.step_name,
                attempt=ctx.attempt,
                default_model=(message_model if isinstance(message_model, str) else None)
                or getattr(actor, "model", None),
                step_limit=getattr(actor, "max_cost_usd", None),
                capture=getattr(actor, "capture", True),
                default_max_tokens=getattr(actor, "default_max_tokens", DEFAULT_MAX_TOKENS),
            ),
        )
    return scope


@contextlib.contextmanager
def replaying(scope: Scope) -> Iterator[Scope]:
    """Make `scope` the one calls in this context are made for."""
    token = _replaying.set(scope)
    try:
        yield scope
    finally:
        _replaying.reset(token)
