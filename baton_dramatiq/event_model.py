"""Event names, topics and payloads: what every bus carries."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import StepChange

STEP_UPDATED = "workflow_step_updated"
WORKFLOW_FINISHED = "workflow_finished"
ALL_TOPIC = "workflow:all"


def workflow_topic(workflow_id: str) -> str:
    return f"workflow:{workflow_id}"


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One event: its name and its payload (a JSON object)."""

    event: str
    payload: dict[str, Any]


def step_event(change: StepChange) -> Event:
    return Event(
        STEP_UPDATED,
        {
            "workflow_id": change.workflow_id,
            "workflow_name": change.workflow_name,
            "step_name": change.step_name,
            "state": change.state,
            "worker": change.worker,
            "attempt": change.attempt,
            "has_result": change.has_result,
            "error": change.error,
            "version": change.version,
            "at": change.at.isoformat(),
        },
    )
