"""Stored step messages, as a workflow's rows hold them and `enqueue_steps` takes them."""

from __future__ import annotations

from typing import Any

import dramatiq

from baton_dramatiq.setup import STEP_OPTION
from baton_dramatiq.store import Transition


def step_messages(
    count: int, *, actor_name: str = "noop", queue_name: str = "default"
) -> list[dict[str, Any]]:
    """`count` messages for steps ``n0``, ``n1``, ... of one workflow."""
    return [
        dramatiq.Message(
            queue_name=queue_name,
            actor_name=actor_name,
            args=(),
            kwargs={},
            options={STEP_OPTION: ["wf", f"n{i}"]},
        ).asdict()
        for i in range(count)
    ]


def ready_steps(transition: Transition) -> list[str]:
    """The names of the steps `transition` made ready, sorted."""
    return sorted(message["options"][STEP_OPTION][1] for message in transition.ready)
