"""What a running step can ask: who am I, and what did my dependencies return."""

from __future__ import annotations

import contextvars
import dataclasses
from typing import TYPE_CHECKING, Any

from . import states as S
from .errors import DependencyFailed, NotInWorkflow, UnknownDependency

if TYPE_CHECKING:
    from .store import Store


@dataclasses.dataclass(frozen=True, slots=True)
class StepContext:
    """The step running in this thread (or task).

    Attributes:
      workflow_id(str), workflow_name(str), step_name(str)
      attempt(int): 1 on the first execution, +1 on each retry; a snooze keeps it.
      deps(tuple[str, ...]): the step's declared dependencies.
    """

    workflow_id: str
    workflow_name: str
    step_name: str
    attempt: int
    deps: tuple[str, ...]


class RunningStep:
    """A step being run: its context, its dependencies' results, and its store."""

    __slots__ = (
        "context",
        "message_id",
        "actor_name",
        "kwargs",
        "store",
        "dependents",
        "outcome",
        "extras",
        "_results",
    )

    def __init__(
        self,
        context: StepContext,
        message_id: str,
        actor_name: str,
        store: Store,
        kwargs: dict[str, Any],
        results: dict[str, tuple[str, Any]],
        dependents: tuple[str, ...],
    ) -> None:
        self.context = context
        self.message_id = message_id
        self.actor_name = actor_name
        #: the keyword arguments of the step's message
        self.kwargs = kwargs
        self.store = store
        #: the steps that depend on this one, as the claim returned them
        self.dependents = dependents
        #: what the run returned (or a Snoozed / Discarded); handed to the middleware here
        #: rather than returned to Dramatiq, which would warn that no Results backend is set
        self.outcome: Any = None
        #: per-run state for toolkits built on steps (the LLM toolkit counts its calls here)
        self.extras: dict[str, Any] = {}
        #: ``{dependency: (state, result)}``, read in the claiming transaction
        self._results = results

    def results(self) -> dict[str, tuple[str, Any]]:
        return self._results


_running: contextvars.ContextVar[RunningStep | None] = contextvars.ContextVar(
    "baton_running_step", default=None
)


def running_step() -> RunningStep | None:
    """The running step of this thread or task, None outside a step (for toolkits)."""
    return _running.get()


def _current() -> RunningStep:
    running = _running.get()
    if running is None:
        raise NotInWorkflow(
            "Not inside a workflow step: get_result, get_all_results and current_step "
            "work only in a @workflow_actor run as part of a Workflow."
        )
    return running


def current_step() -> StepContext:
    """The context of the step running now.

    Raises:
      NotInWorkflow: outside a workflow step.
    """
    return _current().context


def get_result(name: str) -> Any:
    """The result of dependency `name` of the running step.

    Raises:
      UnknownDependency: `name` is not one of the step's declared dependencies.
      DependencyFailed: the dependency did not complete (only with allow_failed_deps).
      NotInWorkflow: outside a workflow step.
    """
    running = _current()
    ctx = running.context
    if name not in ctx.deps:
        deps = ", ".join(repr(d) for d in ctx.deps) or "none"
        raise UnknownDependency(
            f"{name!r} is not a dependency of step {ctx.step_name!r} (its dependencies: {deps})"
        )
    state, result = running.results()[name]
    if state != S.COMPLETED:
        raise DependencyFailed(
            f"Dependency {name!r} of step {ctx.step_name!r} did not complete (state: {state})"
        )
    return result


def get_all_results() -> dict[str, Any]:
    """``{dependency: result}`` for every completed dependency of the running step."""
    running = _current()
    return {
        name: result
        for name in running.context.deps
        for state, result in [running.results().get(name, (S.PENDING, None))]
        if state == S.COMPLETED
    }
