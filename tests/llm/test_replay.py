"""Replay: one step's captured calls sent again, maybe to another model, as a new paid
attempt; nothing upstream runs and the workflow is left as it was."""

from __future__ import annotations

import pytest

import baton_dramatiq as baton
from baton_dramatiq.llm import ReplayError, replay
from baton_dramatiq.llm.testing import FakeProvider
from tests.llm.conftest import actors
from tests.support.cluster import Cluster
from tests.support.llm_actors import MODEL, user

TIMEOUT = 30


def finished_chat(cluster: Cluster, provider: FakeProvider, **kwargs: object) -> baton.WorkflowRun:
    wf = (
        baton.Workflow(name="to-replay")
        .add("source", cluster.actors.echo.message("doc"))
        .add(
            "chat",
            actors(cluster).chat.message(["one", "two"], provider.url, **kwargs),
            deps=["source"],
        )
    )
    run = wf.insert()
    run.wait(timeout=TIMEOUT)
    return run


def test_replay_sends_the_captured_calls_to_another_model_as_a_new_attempt(
    embedded: Cluster, provider: FakeProvider
) -> None:
    # Given a finished workflow whose step asked gpt-4o-mini two things
    provider.respond(lambda request: f"{request.model} on {request.messages[-1]['content']}")
    run = finished_chat(embedded, provider)
    assert run.status() == "completed"
    results = run.results()
    before = baton.stats.workflow_cost(run.id)

    # When the step is replayed on gpt-4o
    done = replay(run.id, "chat", model="openai/gpt-4o", api_key="k")

    # Then both calls went to gpt-4o, as captured, and were paid as attempt 2
    assert [(r.model, r.messages) for r in provider.requests[2:]] == [
        ("gpt-4o", user("one")),
        ("gpt-4o", user("two")),
    ]
    assert done.attempt == 2 and done.step_name == "chat"
    assert [r.text for r in done.responses] == ["gpt-4o on one", "gpt-4o on two"]
    assert done.text == "gpt-4o on two"
    assert all(not r.cached and r.cost_usd > 0 for r in done.responses)

    # And the report counts them, by model, while nothing else changed
    after = baton.stats.workflow_cost(run.id)
    assert after.calls == before.calls + 2
    assert after.by_model["openai/gpt-4o"].total_cost_usd == pytest.approx(done.cost_usd)
    assert after.by_step["chat"].calls == 4
    assert run.results() == results and run.status() == "completed"
    assert embedded.runs(run.id) == ["source", "chat"]  # no step body ran again
    logs = baton.debug.get_logs(run.id, "chat")
    assert [(log.attempt, log.model) for log in logs[2:]] == [(2, "openai/gpt-4o")] * 2


def test_replay_on_the_same_model_pays_again_rather_than_reusing_the_answer(
    embedded: Cluster, provider: FakeProvider
) -> None:
    run = finished_chat(embedded, provider)
    first = replay(run.id, "chat", api_key="k")
    second = replay(run.id, "chat", api_key="k")
    assert provider.count() == 6
    assert (first.attempt, second.attempt) == (2, 3)
    assert [r.model for r in second.responses] == [MODEL, MODEL]
    assert not any(r.cached for r in first.responses + second.responses)


def test_a_step_that_failed_on_one_model_can_be_replayed_on_another(
    embedded: Cluster, provider: FakeProvider
) -> None:
    # Given a step whose model failed on every attempt
    provider.fail(500, model="openai/gpt-4.1-mini", times=3)
    run = finished_chat(embedded, provider, model="openai/gpt-4.1-mini")
    assert run.status() == "failed"

    # When its failed call is replayed on another model
    done = replay(run.id, "chat", model="openai/gpt-4o", api_key="k")

    # Then the call that failed on attempt 3 got an answer, as attempt 4
    assert done.attempt == 4
    assert [r.model for r in done.responses] == ["openai/gpt-4o"]
    assert provider.requests[-1].messages == user("one")


def test_replay_refuses_what_it_cannot_replay_faithfully(
    embedded: Cluster, provider: FakeProvider
) -> None:
    run = finished_chat(embedded, provider)
    with pytest.raises(ReplayError, match="has no step 'nope'"):
        replay(run.id, "nope")
    with pytest.raises(ReplayError, match="no captured LLM calls"):
        replay(run.id, "source")
    with pytest.raises(baton.WorkflowNotFound):
        replay("no-such-workflow", "chat")

    # a field cut to the size cap would replay a different prompt
    baton.debug.set_field_limit(300)
    cut = finished_chat(embedded, provider.respond("z" * 2_000))
    with pytest.raises(ReplayError, match=r"call\(s\) \[0, 1\] was cut to the size cap"):
        replay(cut.id, "chat")

    # a running workflow has no settled step to replay
    slow = baton.Workflow(name="slow").add("nap", embedded.actors.sleeper.message(0.5)).insert()
    with pytest.raises(ReplayError, match="still running"):
        replay(slow.id, "nap")
    slow.cancel()
    assert provider.count() == 4  # only the two workflows' own calls were sent
