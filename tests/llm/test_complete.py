"""`complete` inside steps: costs from litellm's prices, stats, idempotent re-runs, rate
limits, models, cancels. Against a fake OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import litellm
import pytest
import sqlalchemy as sa

import baton_dramatiq as baton
from baton_dramatiq.llm import LLMResponse, complete, llm_actor
from baton_dramatiq.llm.call import retry_after
from baton_dramatiq.llm.testing import FakeProvider
from tests.llm.conftest import actors
from tests.support.cluster import Cluster, wait_for
from tests.support.llm_actors import MODEL, TEST_KEY, user

TIMEOUT = 30


def stats_rows(cluster: Cluster, workflow_id: str) -> list[sa.Row]:  # type: ignore[type-arg]
    s = cluster.store.step_stats
    with cluster.store.connect() as conn:
        return list(
            conn.execute(sa.select(s).where(s.c.workflow_id == workflow_id).order_by(s.c.id))
        )


def states(cluster: Cluster, workflow_id: str) -> dict[str, tuple[str, int, str | None]]:
    return {
        s.step_name: (s.state, s.attempt, s.error)
        for s in baton.query.get_workflow_steps(workflow_id, store=cluster.store)
    }


@pytest.mark.parametrize(
    ("model", "prompt_tokens", "completion_tokens"),
    [("openai/gpt-4o-mini", 1234, 567), ("openai/gpt-4o", 80, 20), ("openai/gpt-4.1", 7, 3)],
)
def test_cost_and_tokens_are_what_litellm_prices_for_the_same_usage(
    embedded: Cluster,
    provider: FakeProvider,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> None:
    # Given a provider that reports a known usage
    provider.respond("priced", prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    # When a step calls the model
    run = (
        baton.Workflow(name="priced")
        .add("ask", actors(embedded).chat.message(["how much?"], provider.url, model=model))
        .insert()
    )
    assert run.wait(timeout=TIMEOUT) == "completed"

    # Then the cost is litellm's price for that usage, by its two public ways of pricing
    prompt_cost, completion_cost = litellm.cost_per_token(
        model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
    )
    info = litellm.get_model_info(model)
    by_hand = (
        float(info["input_cost_per_token"] or 0) * prompt_tokens
        + float(info["output_cost_per_token"] or 0) * completion_tokens
    )
    expected = prompt_cost + completion_cost
    assert expected > 0 and by_hand == pytest.approx(expected, rel=1e-12)
    assert run.results()["ask"]["costs"] == [pytest.approx(expected, rel=1e-12)]

    # And the stats row and the report agree with it
    [row] = stats_rows(embedded, run.id)
    assert (row.step_name, row.attempt, row.model, row.cached) == ("ask", 1, model, False)
    assert (row.prompt_tokens, row.completion_tokens) == (prompt_tokens, completion_tokens)
    assert row.cost_usd == pytest.approx(expected, rel=1e-12) and row.latency_ms > 0
    report = baton.stats.workflow_cost(run.id)
    assert (report.calls, report.cached_calls) == (1, 0)
    assert (report.prompt_tokens, report.completion_tokens) == (prompt_tokens, completion_tokens)
    assert report.total_cost_usd == pytest.approx(expected, rel=1e-12)
    assert report.by_model[model] == report.by_step["ask"]
    assert report.by_model[model].total_cost_usd == pytest.approx(expected, rel=1e-12)


def test_a_step_that_paid_then_failed_gets_its_answer_back_for_free_on_retry(
    embedded: Cluster, provider: FakeProvider
) -> None:
    # Given a step that makes two calls, then raises on its first attempt
    provider.respond(lambda request: f"answer to {request.messages[-1]['content']}")
    message = actors(embedded).chat.message(["one", "two"], provider.url, fail_first=True)
    run = baton.Workflow(name="retry").add("ask", message).insert()

    # When Dramatiq retries it
    assert run.wait(timeout=TIMEOUT) == "completed"

    # Then the provider received each request once
    assert [r.messages for r in provider.requests] == [user("one"), user("two")]
    assert embedded.runs(run.id) == ["ask", "ask"]

    # And the second attempt got the same answers, cached, at no cost
    result = run.results()["ask"]
    assert result["texts"] == ["answer to one", "answer to two"]
    assert result["cached"] == [True, True] and result["costs"] == [0.0, 0.0]

    # And the stats say so: two paid calls on attempt 1, two free replays on attempt 2
    rows = stats_rows(embedded, run.id)
    assert [(r.attempt, r.cached) for r in rows] == [(1, False), (1, False), (2, True), (2, True)]
    assert [r.cost_usd > 0 for r in rows] == [True, True, False, False]
    report = baton.stats.workflow_cost(run.id)
    assert (report.calls, report.cached_calls) == (2, 2)
    assert report.total_cost_usd == pytest.approx(rows[0].cost_usd + rows[1].cost_usd)
    assert report.prompt_tokens == rows[0].prompt_tokens + rows[1].prompt_tokens
    logs = baton.debug.get_logs(run.id, step_name="ask")
    assert [(log.attempt, log.position, log.cached) for log in logs] == [
        (1, 0, False),
        (1, 1, False),
        (2, 0, True),
        (2, 1, True),
    ]


def test_a_call_that_differs_on_the_rerun_is_paid_again(
    embedded: Cluster, provider: FakeProvider
) -> None:
    # Given a step whose second call differs between attempts (a parameter changes)
    @llm_actor(broker=embedded.broker, model=MODEL, max_retries=1, min_backoff=10)
    def drifting(api_base: str) -> list[bool]:
        attempt = baton.current_step().attempt
        same = complete(user("same"), api_base=api_base, api_key="k")
        other = complete(user("same"), api_base=api_base, api_key="k", temperature=attempt / 10)
        if attempt == 1:
            raise RuntimeError("again")
        return [same.cached, other.cached]

    # When it runs twice
    run = baton.Workflow(name="drift").add("d", drifting.message(provider.url)).insert()
    assert run.wait(timeout=TIMEOUT) == "completed"

    # Then only the identical call (same position, model, messages, parameters) is reused
    assert run.results()["d"] == [True, False]
    assert provider.count() == 3
    assert [r.body.get("temperature") for r in provider.requests] == [None, 0.1, 0.2]


def test_identical_calls_at_different_positions_are_each_paid_once(
    embedded: Cluster, provider: FakeProvider
) -> None:
    message = actors(embedded).chat.message(["same", "same", "same"], provider.url, fail_first=True)
    run = baton.Workflow(name="samples").add("ask", message).insert()
    assert run.wait(timeout=TIMEOUT) == "completed"
    assert provider.count() == 3  # three samples on attempt 1, none on attempt 2
    assert run.results()["ask"]["cached"] == [True, True, True]


def test_async_steps_gather_calls_and_replay_them_by_position(
    embedded: Cluster, provider: FakeProvider
) -> None:
    # Given an async step that asks three prompts at once, then fails its first attempt
    provider.respond(lambda request: request.messages[-1]["content"].upper(), delay=0.05)
    message = actors(embedded).chat_together.message(["a", "b", "c"], provider.url, fail_first=True)
    run = baton.Workflow(name="gathered").add("together", message).insert()

    # When it is retried
    assert run.wait(timeout=TIMEOUT) == "completed"

    # Then every answer came back from the store, each at its own position
    result = run.results()["together"]
    assert result["texts"] == ["A", "B", "C"] and result["cached"] == [True, True, True]
    assert sorted(r.messages[0]["content"] for r in provider.requests) == ["a", "b", "c"]
    logs = baton.debug.get_logs(run.id)
    paid = {log.position: (log.messages or [{}])[0]["content"] for log in logs if not log.cached}
    assert paid == {0: "a", 1: "b", 2: "c"}


def test_a_rate_limited_step_snoozes_for_retry_after_then_completes(
    embedded: Cluster, provider: FakeProvider
) -> None:
    # Given a provider that rate-limits the first request, asking for 0.3 s
    provider.fail(429, retry_after=0.3, message="slow down")
    wf = baton.Workflow(name="limited").add(
        "ask", actors(embedded).chat.message(["hello"], provider.url)
    )
    stream = baton.events.subscribe_workflow(wf.id, timeout=TIMEOUT)
    run = wf.insert()

    # Then the step snoozes, spends no retry, and completes on its next run
    assert run.wait(timeout=TIMEOUT) == "completed"
    events = [(e.payload["state"], e.payload["attempt"]) for e in stream if "state" in e.payload]
    assert events == [("executing", 1), ("snoozed", 1), ("executing", 1), ("completed", 1)]
    assert provider.count() == 2  # one rate-limited request (litellm did not retry), one answer
    assert run.results()["ask"]["cached"] == [False]
    report = baton.stats.workflow_cost(run.id)
    assert (report.calls, report.cached_calls) == (1, 0)
    logs = baton.debug.get_logs(run.id)
    assert [log.error.split(":")[0] if log.error else None for log in logs] == [
        "RateLimitError",
        None,
    ]
    assert "slow down" in (logs[0].error or "")


def test_retry_after_is_read_from_litellms_copy_of_the_headers() -> None:
    def error(headers: dict[str, str] | None) -> Exception:
        exc = Exception("429")
        exc.litellm_response_headers = headers  # type: ignore[attr-defined]
        return exc

    assert retry_after(error({"retry-after-ms": "1500", "Retry-After": "9"})) == 1.5
    assert retry_after(error({"Retry-After": "7"})) == 7.0
    assert retry_after(error({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert retry_after(error({"Retry-After": "soon"})) is None
    assert retry_after(error(None)) is None


def test_the_model_is_the_argument_else_the_message_kwarg_else_the_actors(
    embedded: Cluster, provider: FakeProvider
) -> None:
    @llm_actor(broker=embedded.broker, model="openai/gpt-4o-mini", max_retries=0)
    def which(api_base: str, explicit: str | None = None, model: str | None = None) -> str:
        return complete(user("?"), model=explicit, api_base=api_base, api_key="k").model

    @baton.workflow_actor(broker=embedded.broker, max_retries=0)
    def nameless(api_base: str) -> str:
        return complete(user("?"), api_base=api_base, api_key="k").model

    run = (
        baton.Workflow(name="models")
        .add("actor", which.message(provider.url))
        .add("kwarg", which.message(provider.url, model="openai/gpt-4o"))
        .add("argument", which.message(provider.url, "openai/gpt-4.1", model="openai/gpt-4o"))
        .add("none", nameless.message(provider.url))
        .insert()
    )
    assert run.wait(timeout=TIMEOUT) == "failed"
    assert run.results() == {
        "actor": "openai/gpt-4o-mini",
        "kwarg": "openai/gpt-4o",
        "argument": "openai/gpt-4.1",
    }
    error = states(embedded, run.id)["none"][2] or ""
    assert error.startswith("ConfigurationError: No model for this LLM call")
    assert sorted(r.model for r in provider.requests) == ["gpt-4.1", "gpt-4o", "gpt-4o-mini"]


def test_outside_a_step_complete_is_a_plain_priced_litellm_call(provider: FakeProvider) -> None:
    provider.respond("plain", prompt_tokens=10, completion_tokens=5)
    response = complete(user("hi"), model=MODEL, api_base=provider.url, api_key=TEST_KEY)
    assert isinstance(response, LLMResponse)
    assert (response.text, response.model, response.cached) == ("plain", MODEL, False)
    assert (response.prompt_tokens, response.completion_tokens) == (10, 5)
    assert response.cost_usd == pytest.approx(sum(litellm.cost_per_token(MODEL, 10, 5)))
    assert response.raw.choices[0].message.content == "plain"
    with pytest.raises(baton.ConfigurationError, match="outside a step, pass model="):
        complete(user("hi"))
    with pytest.raises(baton.ConfigurationError, match="messages must be a list"):
        complete("hi", model=MODEL)  # type: ignore[arg-type]
    with pytest.raises(baton.ConfigurationError, match="does not stream"):
        complete(user("hi"), model=MODEL, stream=True)


def test_a_cancelled_step_pays_no_further_call_and_its_spend_is_reported(
    embedded: Cluster, provider: FakeProvider, tmp_path: Path
) -> None:
    # Given a step that made one call and is about to make another
    gate = str(tmp_path / "gate")
    message = actors(embedded).chat_until_cancelled.message(provider.url, gate)
    run = baton.Workflow(name="cancel-llm").add("ask", message).insert()
    wait_for(lambda: provider.count() == 1 and stats_rows(embedded, run.id))

    # When the workflow is cancelled
    report = run.cancel()
    Path(gate).write_text("go")

    # Then cancel reports what was spent so far
    assert run.status() == "cancelled"
    assert (report.calls, report.cached_calls) == (1, 0) and report.total_cost_usd > 0
    assert report.by_step["ask"].calls == 1

    # And the step's next call is refused before anything is sent
    refusal = wait_for(lambda: Path(gate + ".refused").exists() and Path(gate + ".refused"))
    assert "Step 'ask' is cancelled" in refusal.read_text()
    assert provider.count() == 1
    assert baton.stats.workflow_cost(run.id) == report
    assert states(embedded, run.id)["ask"][0] == "cancelled"


def test_stats_and_debug_reads_of_an_unknown_workflow_raise_not_found(embedded: Cluster) -> None:
    with pytest.raises(baton.WorkflowNotFound):
        baton.stats.workflow_cost("no-such-workflow")
    with pytest.raises(baton.WorkflowNotFound):
        baton.debug.get_logs("no-such-workflow")


def test_a_workflow_without_llm_calls_costs_nothing(embedded: Cluster) -> None:
    run = baton.Workflow(name="free").add("e", embedded.actors.echo.message(1)).insert()
    assert run.wait(timeout=TIMEOUT) == "completed"
    report = baton.stats.workflow_cost(run.id)
    assert report == baton.stats.CostReport(0.0, 0, 0, 0, 0, {}, {}, None)
    assert baton.debug.get_logs(run.id) == []
