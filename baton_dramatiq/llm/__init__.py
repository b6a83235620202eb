"""The LLM toolkit: cost-tracked, budgeted, replayable LLM calls inside workflow steps.

    from baton_dramatiq.llm import llm_actor, complete, MultiModel

    @llm_actor(model="openai/gpt-4o-mini", max_retries=3, max_cost_usd=0.05)
    def summarize(model: str | None = None) -> dict:
        docs = baton.get_result("fetch_sources")["documents"]
        resp = complete(messages=[{"role": "user", "content": f"Summarize: {docs}"}])
        return {"summary": resp.text}

Needs the ``llm`` extra (litellm, tiktoken). Importing this package does not import
litellm: that happens on the first call, in the worker process.

    actor.py       LLMActor, llm_actor
    complete.py    complete, acomplete (call.py: key, budget, record of one call)
    tokens.py      prompt tokens with tiktoken, or litellm's counter
    cost.py        prices from litellm's cost map
    multimodel.py  MultiModel.fan_out, MultiModel.outputs
    replay.py      replay one step's calls, maybe on another model
    testing.py     FakeProvider, a local OpenAI-compatible server for tests
"""

from ._loader import prepare_tiktoken
from .actor import LLMActor, llm_actor
from .complete import acomplete, complete
from .errors import BudgetExceeded, LLMError, NotEnoughOutputs, ReplayError, StepNotRunning
from .multimodel import MultiModel
from .replay import Replay, replay
from .response import LLMResponse

prepare_tiktoken()  # only sets environment variables: tiktoken loads nothing yet

__all__ = [
    # steps
    "llm_actor",
    "LLMActor",
    "complete",
    "acomplete",
    "LLMResponse",
    "MultiModel",
    # after the fact
    "replay",
    "Replay",
    # errors
    "LLMError",
    "BudgetExceeded",
    "StepNotRunning",
    "NotEnoughOutputs",
    "ReplayError",
]
