"""LLM actors the tests run as workflow steps, declared on whichever broker is given.

They reach the fake provider through the `api_base` argument of their message, so the
same actors work in this process and in worker processes.
"""

from __future__ import annotations

import asyncio
import time
import types
from pathlib import Path
from typing import Any

import dramatiq

import baton_dramatiq as baton
from baton_dramatiq.llm import MultiModel, acomplete, complete, llm_actor

from .actors import FAST_RETRY, Recorder

MODEL = "openai/gpt-4o-mini"
#: a credential the tests give every call, and look for in the debug logs
TEST_KEY = "sk-test-TOPSECRET-0123456789abcdef"
#: the step budget of `frugal`, in USD
STEP_BUDGET = 0.0001


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def summary(answers: list[baton.llm.LLMResponse]) -> dict[str, Any]:
    return {
        "texts": [a.text for a in answers],
        "cached": [a.cached for a in answers],
        "costs": [a.cost_usd for a in answers],
        "models": [a.model for a in answers],
    }


def declare_llm(broker: dramatiq.Broker, record: Recorder) -> types.SimpleNamespace:
    """Declare every LLM test actor on `broker`; returns them by name."""

    def ran() -> baton.StepContext:
        ctx = baton.current_step()
        record(ctx.workflow_id, ctx.step_name)
        return ctx

    @llm_actor(broker=broker, model=MODEL, max_retries=2, **FAST_RETRY)
    def chat(
        prompts: list[str],
        api_base: str,
        model: str | None = None,
        fail_first: bool = False,
        hold_first: float = 0.0,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Ask each prompt in turn; on its first attempt, maybe hold or fail afterwards."""
        ctx = ran()
        answers = [
            complete(user(p), api_base=api_base, api_key=TEST_KEY, **(params or {}))
            for p in prompts
        ]
        if ctx.attempt == 1 and hold_first:
            time.sleep(hold_first)  # a fault test kills the worker here
        if ctx.attempt == 1 and fail_first:
            raise RuntimeError("failed after the calls")
        return summary(answers)

    @llm_actor(broker=broker, model=MODEL, max_retries=2, **FAST_RETRY)
    async def chat_together(
        prompts: list[str], api_base: str, fail_first: bool = False
    ) -> dict[str, Any]:
        """Ask every prompt at once, with acomplete."""
        ctx = ran()
        answers = await asyncio.gather(
            *(acomplete(user(p), api_base=api_base, api_key=TEST_KEY) for p in prompts)
        )
        if ctx.attempt == 1 and fail_first:
            raise RuntimeError("failed after the calls")
        return summary(list(answers))

    @llm_actor(broker=broker, model=MODEL, max_retries=3, max_cost_usd=STEP_BUDGET, **FAST_RETRY)
    def frugal(prompt: str, api_base: str, max_tokens: int | None = None) -> dict[str, Any]:
        """One call under a step budget of STEP_BUDGET."""
        ran()
        params = {} if max_tokens is None else {"max_tokens": max_tokens}
        return summary([complete(user(prompt), api_base=api_base, api_key=TEST_KEY, **params)])

    @llm_actor(broker=broker, model=MODEL, max_retries=2, **FAST_RETRY)
    def chat_until_cancelled(api_base: str, gate: str) -> dict[str, Any]:
        """One call, then wait for `gate` to exist (the test cancels), then another."""
        ran()
        first = complete(user("first"), api_base=api_base, api_key=TEST_KEY)
        deadline = time.monotonic() + 20
        while not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            complete(user("second"), api_base=api_base, api_key=TEST_KEY)
        except baton.llm.StepNotRunning as exc:
            Path(gate + ".refused").write_text(str(exc))
            raise
        return summary([first])

    @baton.workflow_actor(broker=broker, max_retries=3, **FAST_RETRY)
    def synthesize() -> dict[str, Any]:
        """The synthesize step of a fan-out: what each model that succeeded said."""
        ran()
        outputs = MultiModel.outputs()
        return {model: result["texts"][0] for model, result in sorted(outputs.items())}

    return types.SimpleNamespace(
        chat=chat,
        chat_together=chat_together,
        frugal=frugal,
        chat_until_cancelled=chat_until_cancelled,
        synthesize=synthesize,
    )
