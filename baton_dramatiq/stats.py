"""What a workflow's LLM calls cost, from ``workflow_step_stats``.

    report = baton.stats.workflow_cost(run.id)
    report.total_cost_usd, report.calls, report.cached_calls
    report.by_step["summarize"].total_cost_usd
    report.by_model["openai/gpt-4o-mini"].prompt_tokens

`calls` and the token counts count paid calls only; `cached_calls` counts the calls a
re-run of a step answered from its earlier run, at no cost. This module only reads the
store; it never imports the LLM toolkit.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .setup import resolve

if TYPE_CHECKING:
    import dramatiq

    from .store import Store

__all__ = ["CostLine", "CostReport", "workflow_cost"]


@dataclasses.dataclass(frozen=True, slots=True)
class CostLine:
    """The cost of a share of a workflow's calls (one step, or one model).

    Attributes:
      total_cost_usd(float): what was paid, in US dollars.
      prompt_tokens(int), completion_tokens(int): of the paid calls.
      calls(int): paid calls.
      cached_calls(int): calls answered from an earlier run of their step, unpaid.
    """

    total_cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    cached_calls: int = 0

    def __add__(self, other: CostLine) -> CostLine:
        return CostLine(
            self.total_cost_usd + other.total_cost_usd,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.calls + other.calls,
            self.cached_calls + other.cached_calls,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class CostReport:
    """The LLM spend of one workflow, whole and split by step and by model.

    Attributes:
      total_cost_usd(float), prompt_tokens(int), completion_tokens(int), calls(int),
      cached_calls(int): as in CostLine, for the whole workflow.
      by_step(dict[str, CostLine]): per step name.
      by_model(dict[str, CostLine]): per model, as passed to litellm (``openai/gpt-4o``).
      max_cost_usd(float|None): the workflow's budget, None when it has none.
    """

    total_cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    calls: int
    cached_calls: int
    by_step: dict[str, CostLine]
    by_model: dict[str, CostLine]
    max_cost_usd: float | None = None


def workflow_cost(
    workflow_id: str, *, store: Store | None = None, broker: dramatiq.Broker | None = None
) -> CostReport:
    """What the LLM calls of a workflow cost so far (also while it runs, or after a cancel).

    Raises:
      WorkflowNotFound: no workflow has this id.
    """
    gateway = resolve(broker=broker, store=store).store
    budget = gateway.llm_budget(workflow_id)  # raises WorkflowNotFound
    by_step: dict[str, CostLine] = {}
    by_model: dict[str, CostLine] = {}
    total = CostLine()
    for row in gateway.llm_cost_rows(workflow_id):
        if row.cached:
            line = CostLine(cached_calls=row.calls)
        else:
            line = CostLine(
                total_cost_usd=float(row.cost_usd),
                prompt_tokens=int(row.prompt_tokens),
                completion_tokens=int(row.completion_tokens),
                calls=int(row.calls),
            )
        model = row.model or "unknown"
        by_step[row.step_name] = by_step.get(row.step_name, CostLine()) + line
        by_model[model] = by_model.get(model, CostLine()) + line
        total = total + line
    return CostReport(
        total_cost_usd=total.total_cost_usd,
        prompt_tokens=total.prompt_tokens,
        completion_tokens=total.completion_tokens,
        calls=total.calls,
        cached_calls=total.cached_calls,
        by_step=by_step,
        by_model=by_model,
        max_cost_usd=budget,
    )
