"""Redaction and size caps for captured LLM context (see `baton_dramatiq.debug`).

Secrets never reach ``workflow_debug_logs``:

1. values under a secret-looking key (``api_key``, ``Authorization``, ``*_token``, ...),
   at any depth of the parameters or messages, become ``[REDACTED]``;
2. in every string, the exact values found in step 1 and the values of the process's
   secret-looking environment variables (``OPENAI_API_KEY``, ...) are replaced, and so
   are well-known shapes: ``Bearer ...``, ``Authorization: ...``, ``api_key=...``,
   ``sk-...``, ``AIza...``, ``AKIA...``, ``hf_...``, ``gsk_...``;
3. the user's redactor (`set_redactor`) then sees every string;
4. each field is cut to the size cap, longest strings first.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger("baton_dramatiq")

REDACTED = "[REDACTED]"

#: a user hook: called with every captured string, returns what to store instead
Redactor = Callable[[str], str]

_SECRET_KEYS = frozenset(
    {
        "api_key",
        "apikey",
        "x_api_key",
        "api_token",
        "authorization",
        "proxy_authorization",
        "access_token",
        "refresh_token",
        "id_token",
        "auth_token",
        "bearer_token",
        "session_token",
        "azure_ad_token",
        "client_secret",
        "secret",
        "secret_key",
        "password",
        "private_key",
        "credentials",
        "vertex_credentials",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "cookie",
        "set_cookie",
    }
)
_SECRET_SUFFIXES = ("_api_key", "_secret", "_password", "_token", "_credentials")
_SECRET_ENV = re.compile(r"(API_KEY|_TOKEN|_SECRET|SECRET_ACCESS_KEY|_PASSWORD)$")
_SHAPES = (
    # "Bearer <token>" and "Basic <token>" wherever they appear
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{4,}", re.I), rf"\1 {REDACTED}"),
    # header or parameter syntax: authorization: x, api_key=x, "x-api-key": "x"
    (
        re.compile(
            r"""((?:proxy-)?authorization|api[_-]?key|x-api-key|access[_-]?token)"""
            r"""(["']?\s*[:=]\s*["']?)((?:Bearer|Basic)\s+)?+(?!\[REDACTED\])[^\s"',;}&]+""",
            re.I,
        ),
        rf"\1\2\3{REDACTED}",
    ),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{12,}"), REDACTED),  # OpenAI, Anthropic
    (re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"), REDACTED),  # Google
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), REDACTED),  # AWS access key ids
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), REDACTED),  # Hugging Face
    (re.compile(r"\bgsk_[A-Za-z0-9]{20,}"), REDACTED),  # Groq
)

_state_lock = threading.Lock()
_redactor: Redactor | None = None


def set_redactor(fn: Redactor | None) -> None:
    """Install `fn` (str -> str) to run on every captured string; None removes it.

    It runs after the built-in redaction and cannot turn it off. Set it where your
    workers import their actors: it is per process. A redactor that raises makes the
    string be stored as ``[REDACTED]``.
    """
    global _redactor
    if fn is not None and not callable(fn):
        raise TypeError(f"set_redactor needs a function str -> str, got {fn!r}")
    with _state_lock:
        _redactor = fn


def is_secret_key(key: object) -> bool:
    """Whether a parameter or header named `key` holds a secret."""
    if not isinstance(key, str):
        return False
    name = key.strip().lower().replace("-", "_")
    return name in _SECRET_KEYS or name.endswith(_SECRET_SUFFIXES)


def secret_values(*values: Any) -> set[str]:
    """Every string under a secret-looking key in `values`, at any depth."""
    found: set[str] = set()

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, secret or is_secret_key(key))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, secret)
        elif secret and value is not None:
            text = str(value)
            if len(text) >= 4:
                found.add(text)
                # a header value "Bearer xyz" also leaks as "xyz" alone
                found.update(part for part in text.split() if len(part) >= 8)

    for value in values:
        walk(value, False)
    return found


def environment_secrets() -> set[str]:
    """The values of this process's secret-looking environment variables."""
    return {
        value
        for name, value in os.environ.items()
        if _SECRET_ENV.search(name.upper()) and len(value) >= 8
    }


class Scrubber:
    """Redacts captured values: secret keys, known secret values, shapes, the user hook.

    Parameters:
      secrets(Iterable[str]): exact values to remove from every string.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        known = {s for s in secrets if s} | environment_secrets()
        # longest first, so that a value containing another is removed whole
        self._secrets = sorted(known, key=len, reverse=True)
        with _state_lock:
            self._user = _redactor

    def text(self, value: str) -> str:
        """`value` with every secret removed, then passed through the user's redactor."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        for pattern, replacement in _SHAPES:
            value = pattern.sub(replacement, value)
        if self._user is not None:
            try:
                value = str(self._user(value))
            except Exception:
                logger.warning("The debug redactor raised; the value is stored as redacted")
                return REDACTED
        return value

    def value(self, value: Any) -> Any:
        """A JSON-ready copy of `value` with secret keys' values and secrets in text removed."""
        if isinstance(value, dict):
            return {
                str(k): REDACTED if is_secret_key(k) else self.value(v) for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.text(repr(value))  # not JSON: keep a readable, redacted trace


def fit(value: Any, limit: int) -> tuple[Any, bool]:
    """Cut the strings in `value` so that its JSON is at most about `limit` characters.

    The longest strings are cut first (each to the same length, with a marker saying how
    much went); short strings and the structure are kept.

    Returns:
      (the value, whether anything was cut)
    """
    size = len(json.dumps(value, ensure_ascii=False))
    if size <= limit:
        return value, False
    lengths = sorted(_string_lengths(value))
    # the largest per-string length L such that the value, with every string cut to L, fits
    excess = size - limit
    low, high = 0, lengths[-1] if lengths else 0
    while low < high:
        mid = (low + high + 1) // 2
        saved = sum(n - mid for n in lengths if n > mid)
        if saved >= excess:
            low = mid
        else:
            high = mid - 1
    return _cut(value, max(low - 40, 16)), True


def fit_text(text: str | None, limit: int) -> tuple[str | None, bool]:
    """`text` cut to `limit` characters, with a marker; (text, whether it was cut)."""
    if text is None or len(text) <= limit:
        return text, False
    return _cut_string(text, max(limit - 40, 16)), True


def _string_lengths(value: Any) -> Iterable[int]:
    if isinstance(value, str):
        yield len(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _string_lengths(item)
    elif isinstance(value, list):
        for item in value:
            yield from _string_lengths(item)


def _cut(value: Any, length: int) -> Any:
    if isinstance(value, str):
        return _cut_string(value, length)
    if isinstance(value, dict):
        return {k: _cut(v, length) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(item, length) for item in value]
    return value


def _cut_string(text: str, length: int) -> str:
    if len(text) <= length:
        return text
    return f"{text[:length]}…[{len(text) - length} characters cut]"
