"""Prompt tokens are counted before a call, offline: tiktoken loads the encodings litellm
bundles, and other models fall back to litellm's counter without reaching a hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

COUNT_OFFLINE = textwrap.dedent(
    """
    import json, os, socket

    attempts = []
    def refuse(self, address, *args, **kwargs):
        attempts.append(str(address))
        raise OSError("this test has no network")
    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse

    from baton_dramatiq.llm.tokens import count_prompt_tokens, encoding_name
    import tiktoken

    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Summarize: the quick brown fox jumps over the lazy dog."},
        {"role": "assistant", "name": "helper", "content": "Fox jumps dog."},
    ]
    out = {"cache_dir": os.environ.get("TIKTOKEN_CACHE_DIR"), "models": {}}
    for model in MODELS:
        count = count_prompt_tokens(model, messages)
        name = encoding_name(model)
        expected = None
        if name:
            enc = tiktoken.get_encoding(name)
            expected = 3 + sum(
                3 + sum(len(enc.encode(v)) for v in m.values()) + ("name" in m) for m in messages
            )
        out["models"][model] = [name, count.tokens, count.exact, expected]
    out["attempts"] = attempts
    print(json.dumps(out))
    """
)

EXACT = {
    "openai/gpt-4o-mini": "o200k_base",
    "gpt-4.1": "o200k_base",
    "openai/o3-mini": "o200k_base",
    "openai/gpt-4": "cl100k_base",
    "gpt-3.5-turbo": "cl100k_base",
    "text-davinci-003": "p50k_base",
}
ESTIMATED = [
    "anthropic/claude-3-5-sonnet-20240620",
    "gemini/gemini-1.5-flash",
    "groq/llama-3.1-8b-instant",
    "mistral/mistral-large-latest",
    "davinci",  # r50k_base: not bundled, so not counted with tiktoken
]


def run_offline(code: str, models: list[str]) -> dict[str, object]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TIKTOKEN_CACHE_DIR", "CUSTOM_TIKTOKEN_CACHE_DIR")
    }
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", f"MODELS = {models!r}\n{code}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_openai_models_are_counted_exactly_with_bundled_encodings_and_no_network() -> None:
    out = run_offline(COUNT_OFFLINE, [*EXACT, *ESTIMATED])

    # tiktoken was pointed at litellm's copies of its encodings, and nothing connected
    assert str(out["cache_dir"]).endswith(os.path.join("litellm_core_utils", "tokenizers"))
    assert out["attempts"] == []

    counts = out["models"]
    assert isinstance(counts, dict)
    for model, encoding in EXACT.items():
        name, tokens, exact, expected = counts[model]
        assert (name, exact) == (encoding, True), model
        assert tokens == expected, model  # OpenAI's documented count for chat messages
    # 3 + (3+1+4) + (3+1+14) + (3+1+1+1+4), token by token
    assert counts["openai/gpt-4o-mini"][1] == 39 and counts["openai/gpt-4"][1] == 39
    for model in ESTIMATED:
        name, tokens, exact, _ = counts[model]
        assert (name, exact) == (None, False), model
        assert 25 <= tokens <= 45, model  # an estimate of the same text


def test_importing_the_llm_toolkit_loads_neither_litellm_nor_tiktoken() -> None:
    code = (
        "import sys, baton_dramatiq.llm, baton_dramatiq.llm.testing; "
        "print(sorted(m for m in ('litellm', 'tiktoken') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "[]"
