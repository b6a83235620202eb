"""Declaring LLM steps, and the toolkit's errors. No services needed."""

from __future__ import annotations

import pickle

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

import baton_dramatiq as baton
from baton_dramatiq import llm
from baton_dramatiq.llm import LLMActor, llm_actor


def test_an_llm_actor_is_a_workflow_actor_whose_llm_options_stay_out_of_dramatiqs() -> None:
    broker = StubBroker()

    @llm_actor(broker=broker, model="openai/gpt-4o-mini", max_cost_usd=0.05, max_retries=3)
    def summarize(model: str | None = None) -> str:
        return f"called with {model}"

    @llm_actor(broker=broker)
    def bare() -> None: ...

    assert isinstance(summarize, LLMActor) and isinstance(summarize, baton.WorkflowActor)
    assert isinstance(summarize, dramatiq.Actor)
    assert (summarize.model, summarize.max_cost_usd, summarize.capture) == (
        "openai/gpt-4o-mini",
        0.05,
        True,
    )
    assert summarize.options == {"max_retries": 3}
    assert (bare.model, bare.max_cost_usd, bare.default_max_tokens) == (None, None, 1024)
    assert summarize(model="m") == "called with m"  # called directly: an ordinary function
    with pytest.raises(ValueError, match="actor options are undefined: bogus"):
        llm_actor(broker=broker, bogus=1)(lambda: None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_cost_usd": -1}, "max_cost_usd must be a number >= 0"),
        ({"max_cost_usd": "5"}, "max_cost_usd must be a number >= 0"),
        ({"model": ""}, "model must be a litellm model name"),
        ({"default_max_tokens": 0}, "default_max_tokens must be an int >= 1"),
        ({"actor_class": baton.WorkflowActor}, "actor_class must be a subclass of LLMActor"),
    ],
)
def test_bad_llm_options_are_refused_when_the_actor_is_declared(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(baton.ConfigurationError, match=message):
        llm_actor(broker=StubBroker(), **options)(lambda: None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cls",
    [llm.LLMError, llm.BudgetExceeded, llm.StepNotRunning, llm.NotEnoughOutputs, llm.ReplayError],
)
def test_the_toolkits_errors_are_baton_errors_and_pickle(cls: type[baton.BatonError]) -> None:
    error = cls("what went wrong")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls and str(copy) == "what went wrong"
    assert isinstance(error, baton.BatonError) and isinstance(error, dramatiq.DramatiqError)


def test_errors_no_retry_can_fix_discard_the_step_at_once() -> None:
    assert not llm.BudgetExceeded.retryable
    assert not llm.StepNotRunning.retryable
    assert not llm.NotEnoughOutputs.retryable
    assert baton.llm.BudgetExceeded is llm.BudgetExceeded  # reachable as baton.llm
