"""Counting prompt tokens before a call, to price its worst case.

OpenAI models whose encoding litellm bundles are counted exactly with tiktoken:
o200k_base (gpt-4o, gpt-4.1, gpt-5, o1, o3, o4 families), cl100k_base (gpt-4,
gpt-4-turbo, gpt-3.5-turbo, text-embedding-3) and p50k_base (text-davinci-002/003,
code-davinci), with OpenAI's per-message overhead. Every other model (Anthropic, Gemini,
Mistral, Llama, Cohere, DeepSeek, and OpenAI's r50k models such as davinci) is counted
by ``litellm.token_counter``, which uses a bundled tokenizer where it has one and falls
back to cl100k_base: an estimate.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from typing import Any

from ._loader import litellm, tiktoken

#: the encodings litellm bundles, so tiktoken loads them with no network
BUNDLED_ENCODINGS = frozenset({"o200k_base", "cl100k_base", "p50k_base"})

# OpenAI's chat format: every message costs 3 tokens beyond its content, a name 1 more,
# and the reply is primed with 3
_PER_MESSAGE, _PER_NAME, _REPLY_PRIMING = 3, 1, 3


@dataclasses.dataclass(frozen=True, slots=True)
class TokenCount:
    """A prompt's size in tokens; `exact` when tiktoken counted it with the model's own
    encoding, False for an estimate."""

    tokens: int
    exact: bool


def encoding_name(model: str) -> str | None:
    """The bundled tiktoken encoding of an OpenAI model, None for any other model.

    A provider prefix is ignored (``openai/gpt-4o`` is ``gpt-4o``).
    """
    return _encoding_name(model.rsplit("/", 1)[-1])


@functools.lru_cache(maxsize=512)
def _encoding_name(name: str) -> str | None:
    try:
        found: str = tiktoken().encoding_name_for_model(name)
    except KeyError:
        return None
    return found if found in BUNDLED_ENCODINGS else None


def count_prompt_tokens(
    model: str, messages: Sequence[dict[str, Any]], tools: Any = None
) -> TokenCount:
    """The tokens `messages` (and `tools`) take as a prompt to `model`."""
    name = encoding_name(model)
    if name is not None:
        exact = _count_openai(name, messages, tools)
        if exact is not None:
            return exact
    counted = litellm().token_counter(model=model, messages=list(messages), tools=tools)
    return TokenCount(int(counted), exact=False)


def _count_openai(name: str, messages: Sequence[dict[str, Any]], tools: Any) -> TokenCount | None:
    """OpenAI's documented count for text messages; None when a part is not text."""
    encoding = _encoding(name)
    total, exact = _REPLY_PRIMING, True
    for message in messages:
        total += _PER_MESSAGE
        for key, value in message.items():
            if value is None:
                continue
            if isinstance(value, list) and key == "content":
                for part in value:
                    if not (isinstance(part, dict) and part.get("type") == "text"):
                        return None  # an image or audio part: litellm knows their sizes
                    total += len(encoding.encode(str(part.get("text", ""))))
                continue
            if not isinstance(value, str):  # tool calls: their JSON, close to what is sent
                value, exact = json.dumps(value, separators=(",", ":")), False
            total += len(encoding.encode(value, disallowed_special=()))
            if key == "name":
                total += _PER_NAME
    if tools:
        total += len(encoding.encode(json.dumps(tools, separators=(",", ":"), default=str)))
        exact = False
    return TokenCount(total, exact)


@functools.lru_cache(maxsize=8)
def _encoding(name: str) -> Any:
    return tiktoken().get_encoding(name)
