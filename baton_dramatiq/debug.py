"""What the LLM calls of a workflow saw and said, as captured in ``workflow_debug_logs``.

    baton.debug.get_logs(run.id)                       # every call, oldest first
    baton.debug.get_logs(run.id, step_name="summarize")
    baton.debug.set_redactor(lambda text: EMAIL.sub("<email>", text))

Each call made with `baton_dramatiq.llm.complete` inside a step is captured (unless
``capture=False``): its messages, parameters, response text or error, and timing. API
keys and ``Authorization`` values are always redacted; `set_redactor` adds your own
rule; each field is cut to `set_field_limit` characters. This module only reads the
store; it never imports the LLM toolkit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Any

from .redaction import REDACTED, Redactor, set_redactor
from .setup import resolve

if TYPE_CHECKING:
    import dramatiq

    from .store import Store

__all__ = [
    "REDACTED",
    "DebugLog",
    "Redactor",
    "field_limit",
    "get_logs",
    "set_field_limit",
    "set_redactor",
]

_field_limit = 64_000


@dataclasses.dataclass(frozen=True, slots=True)
class DebugLog:
    """One captured LLM call.

    Attributes:
      step_name(str), attempt(int): the step and the attempt that made the call.
      model(str|None): as passed to litellm, e.g. ``openai/gpt-4o-mini``.
      messages(list|None), params(dict|None): what was sent, redacted.
      response_text(str|None): the answer's text; None when the call failed.
      error(str|None): ``"ClassName: message"`` when the call failed or was refused.
      cached(bool): the answer was replayed from an earlier run of the step, unpaid.
      at(datetime): when the call started (UTC).
      position(int): the call's place in its run of the step, from 0.
      latency_ms(float): how long the call took, in milliseconds.
      truncated(bool): a field was cut to the size cap.
    """

    step_name: str
    attempt: int
    model: str | None
    messages: list[Any] | None
    params: dict[str, Any] | None
    response_text: str | None
    error: str | None
    cached: bool
    at: dt.datetime
    position: int = 0
    latency_ms: float = 0.0
    truncated: bool = False


def set_field_limit(chars: int) -> None:
    """Cap each captured field (messages, params, response, error) at about `chars`.

    Per process, like `set_redactor`; 64,000 by default.
    """
    global _field_limit
    if not isinstance(chars, int) or chars < 256:
        raise ValueError(
            f"The field limit must be an int of at least 256 characters, got {chars!r}"
        )
    _field_limit = chars


def field_limit() -> int:
    """The cap on each captured field, in characters."""
    return _field_limit


def get_logs(
    workflow_id: str,
    step_name: str | None = None,
    *,
    store: Store | None = None,
    broker: dramatiq.Broker | None = None,
) -> list[DebugLog]:
    """The captured LLM calls of a workflow (of one step when named), oldest first.

    Raises:
      WorkflowNotFound: no workflow has this id.
    """
    gateway = resolve(broker=broker, store=store).store
    rows = gateway.llm_debug_logs(workflow_id, step_name)
    if not rows:
        gateway.get_workflow(workflow_id)  # raises WorkflowNotFound
    return [
        DebugLog(
            step_name=r.step_name,
            attempt=r.attempt,
            model=r.model,
            messages=r.messages,
            params=r.params,
            response_text=r.response_text,
            error=r.error,
            cached=bool(r.cached),
            at=r.at,
            position=r.position,
            latency_ms=r.latency_ms,
            truncated=bool(r.truncated),
        )
        for r in rows
    ]
