"""`LLMResponse`: what `complete` returns."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class LLMResponse:
    """One completion.

    Attributes:
      text(str): the answer's text ("" when the model only called tools).
      model(str): the model, as passed to litellm (``openai/gpt-4o-mini``).
      prompt_tokens(int), completion_tokens(int): the usage the provider reported (for
        a cached answer, that of the call that paid for it).
      cost_usd(float): what this call cost, from litellm's cost map; 0 when cached.
      cached(bool): replayed from an earlier run of the step, not sent again.
      raw(Any): litellm's ModelResponse (rebuilt from the stored copy when cached).
    """

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached: bool
    raw: Any = dataclasses.field(repr=False, compare=False)
