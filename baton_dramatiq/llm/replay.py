"""`replay`: run one step's LLM calls again, from what was captured, maybe on another model.

The step's code is not run again and nothing upstream runs: the calls of the step's
last attempt that left debug logs are re-issued, in order, through `complete`, exactly
as captured (messages and parameters; redacted values are left out, so credentials
come from the environment or from `**litellm_kwargs`). Each is a new paid call,
recorded as a new attempt of the step (one past the highest it has), so
`baton.stats.workflow_cost` counts it. No stored answer is reused; the workflow's
budget applies. The workflow and the step's result are left as they were.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .. import states as S
from ..redaction import REDACTED, is_secret_key
from ..setup import resolve
from .complete import complete
from .errors import ReplayError
from .response import LLMResponse
from .scope import Scope, replaying

if TYPE_CHECKING:
    import dramatiq

    from ..store import Store

#: errors of calls that were refused before they were sent: nothing to replay there
_NOT_SENT = ("BudgetExceeded", "StepNotRunning")


@dataclasses.dataclass(frozen=True, slots=True)
class Replay:
    """What a replay answered.

    Attributes:
      workflow_id(str), step_name(str)
      attempt(int): the attempt number its calls were recorded under.
      responses(list[LLMResponse]): one per replayed call, in order.
    """

    workflow_id: str
    step_name: str
    attempt: int
    responses: list[LLMResponse]

    @property
    def cost_usd(self) -> float:
        """What the replay cost, in USD."""
        return sum(r.cost_usd for r in self.responses)

    @property
    def text(self) -> str:
        """The last call's answer."""
        return self.responses[-1].text if self.responses else ""


def replay(
    workflow_id: str,
    step_name: str,
    *,
    model: str | None = None,
    store: Store | None = None,
    broker: dramatiq.Broker | None = None,
    **litellm_kwargs: Any,
) -> Replay:
    """Re-issue the captured LLM calls of one step of a finished workflow.

    Parameters:
      model(str|None): send every call to this model instead of the one it used.
      **litellm_kwargs: added to every call (``api_key=...``, ``api_base=...``).

    Raises:
      ReplayError: the workflow is running, the step is unknown, or it has no captured
        calls to replay (capture was off, or a field was cut to the size cap).
      WorkflowNotFound: no workflow has this id.
      BudgetExceeded: the workflow's budget has no room for a call.
    """
    gateway = resolve(broker=broker, store=store).store
    view = gateway.get_workflow(workflow_id)  # WorkflowNotFound
    if view.outcome is None:
        raise ReplayError(
            f"Workflow {workflow_id} is still running: replay a step once it has finished"
        )
    step = gateway.llm_step(workflow_id, step_name)
    if step is None:
        raise ReplayError(f"Workflow {workflow_id} has no step {step_name!r}")
    calls = _captured_calls(gateway.llm_debug_logs(workflow_id, step_name), step_name)
    attempt = 1 + max(step.attempt, step.last_stat_attempt or 0, step.last_log_attempt or 0)
    scope = Scope(
        store=gateway, workflow_id=workflow_id, step_name=step_name, attempt=attempt, replay=True
    )
    if step.state not in S.TERMINAL:  # a cancelled workflow can leave none running
        raise ReplayError(f"Step {step_name!r} is {step.state}: it can be replayed once it settled")
    responses = []
    with replaying(scope):
        for log in calls:
            params = {
                k: v
                for k, v in (log.params or {}).items()
                if v != REDACTED and not is_secret_key(k)
            }
            params.update(litellm_kwargs)
            responses.append(complete(list(log.messages or []), model=model or log.model, **params))
    return Replay(workflow_id, step_name, attempt, responses)


def _captured_calls(logs: list[Any], step_name: str) -> list[Any]:
    """The calls of the last attempt that made any: per position, the latest that
    answered (else the latest sent), in order."""
    sent = [log for log in logs if not (log.error or "").startswith(_NOT_SENT)]
    if not sent:
        raise ReplayError(
            f"Step {step_name!r} has no captured LLM calls to replay (was capture off?)"
        )
    attempt = max(log.attempt for log in sent)
    chosen: dict[int, Any] = {}
    for log in sent:  # oldest first: a later entry replaces an earlier one
        if log.attempt != attempt:
            continue
        current = chosen.get(log.position)
        if current is None or log.error is None or current.error is not None:
            chosen[log.position] = log
    calls = [chosen[position] for position in sorted(chosen)]
    cut = [log.position for log in calls if log.truncated]
    if cut:
        raise ReplayError(
            f"Step {step_name!r}: the captured context of call(s) {cut} was cut to the size "
            "cap, so it cannot be replayed faithfully (raise baton.debug.set_field_limit)"
        )
    return calls
