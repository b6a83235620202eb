"""Prices from litellm's cost map: a call's worst case before it, its cost after it."""

from __future__ import annotations

import logging
from typing import Any

from ._loader import litellm

logger = logging.getLogger("baton_dramatiq")

_warned: set[str] = set()


def price(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """What litellm's cost map charges for this usage of `model`, in USD; None when the
    model has no price there (register one with ``litellm.register_model``)."""
    try:
        prompt, completion = litellm().cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    except Exception:
        return None
    return float(prompt) + float(completion)


def max_output_tokens(model: str) -> int | None:
    """The most tokens `model` can answer with, as litellm's model map says; None if unknown."""
    try:
        info = litellm().get_model_info(model)
    except Exception:
        return None
    value = info.get("max_output_tokens") or info.get("max_tokens")
    return int(value) if value else None


def call_cost(raw: Any, model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """The cost of a call that returned `raw`, priced by ``litellm.completion_cost``.

    A model litellm cannot price costs 0, with one warning per model and process.
    """
    try:
        return float(litellm().completion_cost(completion_response=raw, model=model))
    except Exception:
        fallback = price(model, prompt_tokens, completion_tokens)
        if fallback is not None:
            return fallback
        if model not in _warned:
            _warned.add(model)
            logger.warning(
                "litellm has no price for model %r: its calls are recorded at cost 0. "
                "Register one with litellm.register_model(...)",
                model,
            )
        return 0.0
