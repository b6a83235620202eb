"""One LLM call inside a step: its key, its budget, its record.

A call's life, each move one transaction in the store:

  lookup     a paid call with the same key in an earlier run of the step? Return its
             stored answer (``cached=True``, cost 0) and record that.
  reserve    hold the worst-case cost on the step's and the workflow's budgets, or
             raise BudgetExceeded before anything is sent.
  succeeded  record the stats row (with the answer, for later runs), the debug log, and
             the actual cost, before `complete` returns.
  failed     release the reservation, record the error; a rate limit snoozes the step.

The key: a SHA-256 of the call's position in its run (0 for the run's first call), the
model, the messages and the parameters that shape the answer (transport settings such
as ``api_key``, ``api_base`` or ``timeout`` are left out).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from .. import debug
from ..errors import ConfigurationError, Snooze, StoreError, WorkflowNotFound
from ..redaction import Scrubber, fit, fit_text, is_secret_key, secret_values
from ..store.llm import Refusal
from ._loader import litellm
from .cost import call_cost, max_output_tokens, price
from .errors import BudgetExceeded, StepNotRunning
from .response import LLMResponse
from .scope import Scope, current_scope
from .tokens import count_prompt_tokens

logger = logging.getLogger("baton_dramatiq")

#: parameters that change how a request travels, not what it asks: not part of its key
TRANSPORT_PARAMS = frozenset(
    {
        "api_key",
        "api_base",
        "base_url",
        "api_version",
        "organization",
        "timeout",
        "request_timeout",
        "num_retries",
        "max_retries",
        "extra_headers",
        "headers",
        "metadata",
    }
)
#: how long a rate-limited step sleeps when the provider does not say (seconds)
DEFAULT_RETRY_AFTER = 30.0
#: an estimated prompt (a model tiktoken cannot count exactly) is priced this much larger
ESTIMATE_MARGIN = 1.25
_RECORD_TRIES = 3
_KEY_VERSION = 1


class Call:
    """A call about to be made; see the module's docstring for its moves."""

    def __init__(
        self,
        messages: Any,
        model: str | None,
        capture: bool | None,
        params: dict[str, Any],
    ) -> None:
        if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
            raise ConfigurationError(
                "messages must be a list of dicts such as {'role': 'user', 'content': '...'}"
            )
        if params.get("stream"):
            raise ConfigurationError("complete() does not stream: call it without stream=True")
        self.scope: Scope | None = current_scope()
        self.model = _resolve_model(model, self.scope)
        self.messages: list[dict[str, Any]] = [dict(m) for m in messages]
        self.params = dict(params)  # as given: what the key is made of
        self.sent = dict(params)  # as sent: a budget may add max_tokens
        self.position = self.scope.next_position() if self.scope else 0
        self.capture = bool(
            (self.scope.capture if capture is None else capture) if self.scope else False
        )
        self.reserved = 0.0
        self.at = dt.datetime.now(dt.UTC)

    # -- the request ------------------------------------------------------------------

    @functools.cached_property
    def key(self) -> str:
        shaping = {k: v for k, v in self.params.items() if k not in TRANSPORT_PARAMS}
        identity = {
            "v": _KEY_VERSION,
            "position": self.position,
            "model": self.model,
            "messages": self.messages,
            "params": {k: v for k, v in shaping.items() if not is_secret_key(k)},
        }
        encoded = json.dumps(identity, sort_keys=True, ensure_ascii=False, default=repr)
        return hashlib.sha256(encoded.encode()).hexdigest()

    def request(self) -> dict[str, Any]:
        """litellm's keyword arguments. Inside a step its retries are off: a rate limit
        snoozes the step, other errors go to Dramatiq's retries."""
        kwargs = dict(self.sent, model=self.model, messages=self.messages)
        if self.scope is not None:
            kwargs["num_retries"] = 0
            kwargs["max_retries"] = 0
        return kwargs

    # -- the moves --------------------------------------------------------------------

    def lookup(self) -> LLMResponse | None:
        """The answer a paid call with this key got in an earlier run of the step."""
        scope = self.scope
        if scope is None or scope.replay:
            return None
        started = time.monotonic()
        stored = scope.store.find_llm_call(scope.workflow_id, scope.step_name, self.key)
        if not isinstance(stored, dict):
            return None
        response = LLMResponse(
            text=str(stored.get("text", "")),
            model=self.model,
            prompt_tokens=int(stored.get("prompt_tokens", 0)),
            completion_tokens=int(stored.get("completion_tokens", 0)),
            cost_usd=0.0,
            cached=True,
            raw=_revive(stored.get("raw")),
        )
        latency = _ms(started)
        self._record(
            self._stats_row(0, 0, 0.0, latency, cached=True),
            self._debug_row(response_text=response.text, cached=True, latency_ms=latency),
        )
        return response

    def reserve(self) -> None:
        """Hold the call's worst-case cost on the budgets that apply.

        Raises:
          BudgetExceeded: it could cost more than is left; nothing was sent.
          StepNotRunning: the step was cancelled meanwhile.
        """
        scope = self.scope
        assert scope is not None
        try:
            amount = self._worst_case(scope)
            with scope.reclaim_lock if not scope.reclaimed else contextlib.nullcontext():
                # the run's first reservation gives back what a dead earlier run held
                reclaim = not scope.reclaimed and not scope.replay
                refusal = scope.store.reserve_llm(
                    scope.workflow_id,
                    scope.step_name,
                    amount,
                    step_limit=None if scope.replay else scope.step_limit,
                    running=not scope.replay,
                    reclaim=reclaim,
                )
                scope.reclaimed = True
            if refusal is not None:
                raise _refusal_error(refusal, amount, scope, self.model)
        except (BudgetExceeded, StepNotRunning) as error:
            self._log_only(error)
            raise
        self.reserved = amount

    def succeeded(self, raw: Any, started: float) -> LLMResponse:
        """Price and record a call that answered; returns what `complete` returns."""
        latency = _ms(started)
        text = _text(raw)
        prompt, completion = _usage(raw)
        cost = call_cost(raw, self.model, prompt, completion)
        response = LLMResponse(text, self.model, prompt, completion, cost, False, raw)
        if self.scope is None:
            return response
        stored = {
            "text": text,
            "model": self.model,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost_usd": cost,
            "raw": _jsonable(raw),
        }
        self._record(
            self._stats_row(prompt, completion, cost, latency, cached=False, response=stored),
            self._debug_row(response_text=text, latency_ms=latency),
        )
        return response

    def failed(self, error: BaseException, started: float) -> None:
        """Release the reservation and record the error.

        Raises:
          Snooze: the provider rate-limited the call, inside a step (not a replay).
        """
        scope = self.scope
        if scope is None:
            return
        try:
            scope.store.release_llm(
                scope.workflow_id,
                scope.step_name,
                self.reserved,
                self._debug_row(error=_describe(error), latency_ms=_ms(started)),
                running=not scope.replay,
            )
        except Exception:
            logger.exception("Could not record a failed LLM call of step %r", scope.step_name)
        if _is_rate_limit(error) and not scope.replay:
            seconds = retry_after(error)
            raise Snooze(DEFAULT_RETRY_AFTER if seconds is None else seconds) from error

    # -- rows -------------------------------------------------------------------------

    def _worst_case(self, scope: Scope) -> float:
        """The most this call can cost under a budget (0 when no budget applies)."""
        step_limit = None if scope.replay else scope.step_limit
        if step_limit is None and scope.workflow_limit() is None:
            return 0.0
        cap = self.sent.get("max_tokens") or self.sent.get("max_completion_tokens")
        if cap is None:
            cap = scope.default_max_tokens
            most = max_output_tokens(self.model)
            cap = min(cap, most) if most else cap
            self.sent["max_tokens"] = cap  # priced as the worst case, so sent as the cap
        count = count_prompt_tokens(self.model, self.messages, self.sent.get("tools"))
        prompt = count.tokens if count.exact else math.ceil(count.tokens * ESTIMATE_MARGIN)
        worst = price(self.model, prompt, int(cap))
        if worst is None:
            raise BudgetExceeded(
                f"Cannot budget a call to {self.model!r}: litellm has no price for it. "
                "Register one with litellm.register_model(...)"
            )
        return worst

    def _stats_row(
        self,
        prompt: int,
        completion: int,
        cost: float,
        latency: float,
        *,
        cached: bool,
        response: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        scope = self.scope
        assert scope is not None
        return {
            "workflow_id": scope.workflow_id,
            "step_name": scope.step_name,
            "attempt": scope.attempt,
            "model": self.model,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost_usd": cost,
            "latency_ms": latency,
            "cached": cached,
            "at": self.at,
            "call_key": self.key,
            "response": response,
        }

    def _debug_row(
        self,
        *,
        response_text: str | None = None,
        error: str | None = None,
        cached: bool = False,
        latency_ms: float = 0.0,
    ) -> dict[str, Any] | None:
        """The call's context, redacted and cut to size; None when capture is off."""
        scope = self.scope
        if scope is None or not self.capture:
            return None
        scrub = Scrubber(secret_values(self.params, self.sent))
        limit = debug.field_limit()
        messages, cut_messages = fit(scrub.value(self.messages), limit)
        params, cut_params = fit(scrub.value(self.sent), limit)
        text, cut_text = fit_text(
            None if response_text is None else scrub.text(response_text), limit
        )
        problem, cut_error = fit_text(
            None if error is None else scrub.text(error), min(limit, 4000)
        )
        return {
            "workflow_id": scope.workflow_id,
            "step_name": scope.step_name,
            "attempt": scope.attempt,
            "model": self.model,
            "messages": messages,
            "params": params,
            "response_text": text,
            "error": problem,
            "cached": cached,
            "at": self.at,
            "position": self.position,
            "latency_ms": latency_ms,
            "truncated": cut_messages or cut_params or cut_text or cut_error,
        }

    def _record(self, stats: dict[str, Any], debug_row: dict[str, Any] | None) -> None:
        scope = self.scope
        assert scope is not None
        for attempt in range(_RECORD_TRIES):
            try:
                scope.store.record_llm(
                    stats, debug_row, reserved=self.reserved, running=not scope.replay
                )
                return
            except StoreError:
                # the provider already answered: losing this record means paying again
                if attempt == _RECORD_TRIES - 1:
                    raise
                logger.warning("Could not record an LLM call; trying again", exc_info=True)
                time.sleep(0.2 * 2**attempt)

    def _log_only(self, error: BaseException) -> None:
        """Record a call that was refused before it was sent."""
        row = self._debug_row(error=_describe(error))
        if row is not None and self.scope is not None:
            try:
                self.scope.store.insert_debug_log(row)
            except Exception:
                logger.exception("Could not record a refused LLM call")


def _resolve_model(model: str | None, scope: Scope | None) -> str:
    chosen = model or (scope.default_model if scope else None)
    if not chosen or not isinstance(chosen, str):
        where = (
            "give the step's message a model= argument, or declare @llm_actor(model=...)"
            if scope
            else "outside a step, pass model="
        )
        raise ConfigurationError(f"No model for this LLM call: pass model=..., or {where}")
    return chosen


def _refusal_error(refusal: Refusal, amount: float, scope: Scope, model: str) -> Exception:
    if refusal.scope == "not_running":
        return StepNotRunning(
            f"Step {scope.step_name!r} is {refusal.state}: no further LLM calls are made for it"
        )
    if refusal.scope == "missing":
        return WorkflowNotFound(f"No workflow with id {scope.workflow_id!r}")
    owner = (
        f"step {scope.step_name!r} (llm_actor max_cost_usd)"
        if refusal.scope == "step"
        else f"workflow {scope.workflow_id} (Workflow max_cost_usd)"
    )
    used = refusal.spent + refusal.reserved
    return BudgetExceeded(
        f"A call to {model} could cost ${amount:.6f}, more than is left of the budget of "
        f"{owner}: ${refusal.limit:.6f}, of which ${used:.6f} is spent or held by calls "
        "in flight. Nothing was sent."
    )


def _text(raw: Any) -> str:
    try:
        content = raw.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


def _usage(raw: Any) -> tuple[int, int]:
    usage = getattr(raw, "usage", None)
    return (
        int(getattr(usage, "prompt_tokens", 0) or 0),
        int(getattr(usage, "completion_tokens", 0) or 0),
    )


def _jsonable(raw: Any) -> Any:
    """litellm's response as plain JSON, to store and rebuild for a cached answer."""
    try:
        return json.loads(raw.model_dump_json())
    except Exception:
        return None


def _revive(stored: Any) -> Any:
    if not isinstance(stored, dict):
        return stored
    try:
        return litellm().ModelResponse(**stored)
    except Exception:
        return stored


def _is_rate_limit(error: BaseException) -> bool:
    return getattr(error, "status_code", None) == 429 or type(error).__name__ == "RateLimitError"


def retry_after(error: BaseException) -> float | None:
    """Seconds the provider asked to wait (``retry-after-ms`` or ``Retry-After``, in
    seconds or as an HTTP date), from litellm's copy of the response headers."""
    for source in (
        getattr(error, "litellm_response_headers", None),
        getattr(error, "headers", None),
        getattr(getattr(error, "response", None), "headers", None),
    ):
        if not source:
            continue
        headers = {str(k).lower(): str(v) for k, v in dict(source).items()}
        try:
            if "retry-after-ms" in headers:
                return max(0.0, float(headers["retry-after-ms"]) / 1000)
            if "retry-after" in headers:
                value = headers["retry-after"].strip()
                try:
                    return max(0.0, float(value))
                except ValueError:
                    when = email.utils.parsedate_to_datetime(value)
                    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
        except (TypeError, ValueError):
            continue
    return None


def _describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    first = next((line for line in lines if line.strip()), "")
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000
