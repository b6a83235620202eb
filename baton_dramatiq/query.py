"""Read-only views of workflows and steps, for UIs and scripts."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Any

from . import states as S
from .setup import resolve

if TYPE_CHECKING:
    import dramatiq

    from .events import Event
    from .store import Store


@dataclasses.dataclass(frozen=True, slots=True)
class WorkflowView:
    """A workflow. `state` is ``"running"`` or the outcome; `outcome` is None while running."""

    id: str
    name: str
    state: str
    outcome: str | None
    failed_steps: tuple[str, ...]
    parent_id: str | None
    inserted_at: dt.datetime
    finished_at: dt.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class StepView:
    """One step. `worker` is its actor's name; `version` counts its published transitions."""

    step_name: str
    state: str
    worker: str
    attempt: int
    deps: tuple[str, ...]
    has_result: bool
    error: str | None
    version: int
    inserted_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    def payload(self, workflow: WorkflowView) -> dict[str, Any]:
        """This step's current state as a `workflow_step_updated` payload."""
        from .event_model import step_event
        from .store import StepChange

        change = StepChange(
            workflow_id=workflow.id,
            workflow_name=workflow.name,
            step_name=self.step_name,
            state=self.state,
            worker=self.worker,
            attempt=self.attempt,
            has_result=self.has_result,
            error=self.error,
            version=self.version,
            at=self.finished_at or self.started_at or self.inserted_at,
        )
        return step_event(change).payload


def _workflow_view(row: Any) -> WorkflowView:
    return WorkflowView(
        id=row.id,
        name=row.name,
        state=row.outcome or S.RUNNING,
        outcome=row.outcome,
        failed_steps=tuple(row.failed_steps or ()),
        parent_id=row.parent_id,
        inserted_at=row.inserted_at,
        finished_at=row.finished_at,
    )


def get_workflow(
    workflow_id: str, *, store: Store | None = None, broker: dramatiq.Broker | None = None
) -> WorkflowView:
    """The workflow with this id.

    Raises:
      WorkflowNotFound: no workflow has this id.
    """
    return _workflow_view(resolve(broker=broker, store=store).store.get_workflow(workflow_id))


def get_workflow_steps(
    workflow_id: str, *, store: Store | None = None, broker: dramatiq.Broker | None = None
) -> list[StepView]:
    """Every step of a workflow, in topological order.

    Raises:
      WorkflowNotFound: no workflow has this id.
    """
    gateway = resolve(broker=broker, store=store).store
    rows = gateway.get_steps(workflow_id)
    if not rows:
        gateway.get_workflow(workflow_id)  # raises WorkflowNotFound
    return [
        StepView(
            step_name=r.step_name,
            state=r.state,
            worker=r.actor_name,
            attempt=r.attempt,
            deps=tuple(r.deps),
            has_result=bool(r.has_result),
            error=r.error,
            version=r.version,
            inserted_at=r.inserted_at,
            started_at=r.started_at,
            finished_at=r.finished_at,
        )
        for r in rows
    ]


def list_workflows(
    state: str | None = None,
    name_prefix: str | None = None,
    limit: int = 100,
    *,
    store: Store | None = None,
    broker: dramatiq.Broker | None = None,
) -> list[WorkflowView]:
    """Workflows, newest first.

    Parameters:
      state(str|None): ``"running"``, ``"completed"``, ``"failed"`` or ``"cancelled"``.
      name_prefix(str|None): only workflows whose name starts with this.
      limit(int): at most this many.
    """
    from .errors import ConfigurationError

    if state is not None and state not in (S.RUNNING, *S.OUTCOMES):
        raise ConfigurationError(
            f"Unknown workflow state {state!r}: use one of running, completed, failed, cancelled"
        )
    if limit < 1:
        raise ConfigurationError(f"limit must be >= 1, got {limit}")
    rows = resolve(broker=broker, store=store).store.list_workflows(
        state=state, name_prefix=name_prefix, limit=limit
    )
    return [_workflow_view(r) for r in rows]


def finished_event(view: WorkflowView) -> Event:
    """The `workflow_finished` event of a finished workflow, built from the store."""
    from .events import WORKFLOW_FINISHED, Event

    assert view.finished_at is not None
    return Event(
        WORKFLOW_FINISHED,
        {
            "workflow_id": view.id,
            "workflow_name": view.name,
            "outcome": view.outcome,
            "failed_steps": list(view.failed_steps),
            "at": view.finished_at.isoformat(),
        },
    )
