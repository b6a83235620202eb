"""`llm_actor`: a workflow actor whose steps call LLMs with a default model and a budget."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

import dramatiq

from ..actor import WorkflowActor
from ..context import running_step
from ..errors import ConfigurationError

F = TypeVar("F", bound=Callable[..., Any])

#: where a running LLMActor leaves itself in `RunningStep.extras`, for `complete` to read
ACTOR_KEY = "baton_dramatiq.llm.actor"

DEFAULT_MAX_TOKENS = 1024


class LLMActor(WorkflowActor):
    """A workflow actor with LLM options; `complete` inside its steps reads them.

    Its options are kept on the actor, not in Dramatiq's options, so no middleware has to
    declare them.

    Attributes:
      model(str|None): the model `complete` uses when neither the call nor the step's
        message names one.
      max_cost_usd(float|None): the step's budget in USD, over all its attempts.
      capture(bool): record each call's context in ``workflow_debug_logs``.
      default_max_tokens(int): under a budget, a call that sets no ``max_tokens`` is
        priced with this many completion tokens, and sends it as ``max_tokens``.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        model: str | None = None,
        max_cost_usd: float | None = None,
        capture: bool = True,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        **actor_kwargs: Any,
    ) -> None:
        check_options(model=model, max_cost_usd=max_cost_usd, default_max_tokens=default_max_tokens)
        self.model = model
        self.max_cost_usd = max_cost_usd
        self.capture = bool(capture)
        self.default_max_tokens = default_max_tokens
        super().__init__(fn, **actor_kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        running = running_step()
        if running is not None and running.actor_name == self.actor_name:
            running.extras[ACTOR_KEY] = self
        return super().__call__(*args, **kwargs)


def check_options(*, model: Any, max_cost_usd: Any, default_max_tokens: Any) -> None:
    """Refuse bad LLM options when the actor is declared, not when it first runs."""
    if model is not None and (not isinstance(model, str) or not model):
        raise ConfigurationError(f"model must be a litellm model name, got {model!r}")
    if max_cost_usd is not None and (
        isinstance(max_cost_usd, bool)
        or not isinstance(max_cost_usd, int | float)
        or max_cost_usd < 0
    ):
        raise ConfigurationError(f"max_cost_usd must be a number >= 0, got {max_cost_usd!r}")
    if (
        isinstance(default_max_tokens, bool)
        or not isinstance(default_max_tokens, int)
        or default_max_tokens < 1
    ):
        raise ConfigurationError(
            f"default_max_tokens must be an int >= 1, got {default_max_tokens!r}"
        )


@overload
def llm_actor(fn: F) -> LLMActor: ...


@overload
def llm_actor(
    fn: None = None,
    *,
    model: str | None = None,
    max_cost_usd: float | None = None,
    capture: bool = True,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    **options: Any,
) -> Callable[[F], LLMActor]: ...


def llm_actor(
    fn: Any = None,
    *,
    model: str | None = None,
    max_cost_usd: float | None = None,
    capture: bool = True,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    **options: Any,
) -> Any:
    """Declare a workflow step that calls LLMs; takes every `workflow_actor` option.

    Parameters:
      model(str|None): the default model, e.g. ``"openai/gpt-4o-mini"``.
      max_cost_usd(float|None): the step's budget in USD, over all its attempts.
      capture(bool): record each call's context in ``workflow_debug_logs``.
      default_max_tokens(int): the completion cap priced (and sent) under a budget when
        a call sets no ``max_tokens``.

    Examples:
      >>> @llm_actor(model="gpt-4o-mini", max_retries=3, max_cost_usd=0.05)
      ... def summarize(model=None): ...
    """
    check_options(model=model, max_cost_usd=max_cost_usd, default_max_tokens=default_max_tokens)
    actor_class = options.pop("actor_class", LLMActor)
    if not (isinstance(actor_class, type) and issubclass(actor_class, LLMActor)):
        raise ConfigurationError(f"actor_class must be a subclass of LLMActor, got {actor_class!r}")
    options["actor_class"] = functools.partial(
        actor_class,
        model=model,
        max_cost_usd=max_cost_usd,
        capture=capture,
        default_max_tokens=default_max_tokens,
    )
    if fn is None:
        return lambda f: dramatiq.actor(f, **options)
    return dramatiq.actor(fn, **options)
