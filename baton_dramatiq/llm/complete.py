"""`complete` and `acomplete`: an LLM call through litellm, costed, budgeted, replayable."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ._loader import litellm
from .call import Call
from .response import LLMResponse


def complete(
    messages: list[dict[str, Any]],
    *,
    model: str | None = None,
    capture: bool | None = None,
    **litellm_kwargs: Any,
) -> LLMResponse:
    """Call an LLM through ``litellm.completion``.

    Inside a workflow step, the call is also:

    - recorded in ``workflow_step_stats`` (tokens, cost from litellm's prices, latency);
    - idempotent across re-runs of the step: the same call (same position in the run,
      model, messages and parameters) that already succeeded in an earlier run returns
      its stored answer with ``cached=True`` at no cost. The answer is stored before
      this returns, so a crash afterwards does not pay for it again;
    - captured in ``workflow_debug_logs`` (redacted; see `baton.debug`);
    - budgeted: under the step's (`llm_actor` ``max_cost_usd``) or the workflow's budget,
      its worst case is priced first and held until it returns;
    - snoozed on a rate limit (HTTP 429) for the provider's Retry-After (30 s if none),
      spending no retry: litellm's own retries are off inside steps.

    The step is found through a context variable, as `baton.current_step()` is: call it
    from the step's own thread or task. A thread you start inside a step sees no step
    (its calls are plain litellm calls) unless it runs in a copy of the step's context,
    e.g. ``executor.submit(contextvars.copy_context().run, complete, messages)``.

    Parameters:
      messages(list[dict]): the chat messages.
      model(str|None): a litellm model name; by default the step message's ``model``
        argument, else the actor's ``model=``.
      capture(bool|None): record the call's context (default: the actor's ``capture``).
      **litellm_kwargs: passed to litellm (``temperature``, ``max_tokens``, ``api_base``...).

    Raises:
      BudgetExceeded: the call could exceed a budget; nothing was sent.
      StepNotRunning: the step was cancelled meanwhile; nothing was sent.
      ConfigurationError: no model, bad messages, ``stream=True``, litellm missing.
    """
    call = Call(messages, model, capture, litellm_kwargs)
    if call.scope is not None:
        cached = call.lookup()
        if cached is not None:
            return cached
        call.reserve()
    llm = litellm()  # imported before the clock starts: the first import takes seconds
    started = time.monotonic()
    try:
        raw = llm.completion(**call.request())
    except BaseException as error:
        call.failed(error, started)
        raise
    return call.succeeded(raw, started)


async def acomplete(
    messages: list[dict[str, Any]],
    *,
    model: str | None = None,
    capture: bool | None = None,
    **litellm_kwargs: Any,
) -> LLMResponse:
    """`complete` for async steps, through ``litellm.acompletion``.

    Calls gathered together in one run take their positions in the order they start.
    """
    call = Call(messages, model, capture, litellm_kwargs)  # numbered before any await
    if call.scope is not None:
        cached = await asyncio.to_thread(call.lookup)
        if cached is not None:
            return cached
        await asyncio.to_thread(call.reserve)
    llm = await asyncio.to_thread(litellm)
    started = time.monotonic()
    try:
        raw = await llm.acompletion(**call.request())
    except BaseException as error:
        await asyncio.to_thread(call.failed, error, started)
        raise
    return await asyncio.to_thread(call.succeeded, raw, started)
