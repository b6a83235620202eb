"""Budgets: a call that could exceed the step's or the workflow's budget is refused before
anything is sent, the step is discarded at once, and parallel steps cannot overspend."""

from __future__ import annotations

import datetime as dt

import dramatiq.broker
import litellm
import pytest
import sqlalchemy as sa

import baton_dramatiq as baton
from baton_dramatiq.llm import complete, llm_actor
from baton_dramatiq.llm.actor import DEFAULT_MAX_TOKENS
from baton_dramatiq.llm.testing import FakeProvider
from baton_dramatiq.llm.tokens import count_prompt_tokens
from baton_dramatiq.testing import embedded as embedded_setup
from tests.llm.conftest import actors
from tests.support.cluster import Cluster
from tests.support.llm_actors import MODEL, STEP_BUDGET, user

TIMEOUT = 30


def price(prompt_tokens: int, completion_tokens: int, model: str = MODEL) -> float:
    prompt, completion = litellm.cost_per_token(
        model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
    )
    return float(prompt + completion)


def steps(cluster: Cluster, workflow_id: str) -> dict[str, baton.StepView]:
    views = baton.query.get_workflow_steps(workflow_id, store=cluster.store)
    return {view.step_name: view for view in views}


def ledger(store: baton.Store, workflow_id: str) -> tuple[float, float]:
    w = store.workflows
    with store.connect() as conn:
        row = conn.execute(
            sa.select(w.c.llm_spent_usd, w.c.llm_reserved_usd).where(w.c.id == workflow_id)
        ).one()
    return row.llm_spent_usd, row.llm_reserved_usd


def test_a_call_over_the_step_budget_discards_the_step_and_sends_nothing(
    embedded: Cluster, provider: FakeProvider
) -> None:
    # Given a step with a budget of $0.0001 and a call that sets no max_tokens
    run = (
        baton.Workflow(name="over")
        .add("frugal", actors(embedded).frugal.message("Summarize the news", provider.url))
        .insert()
    )

    # Then the call is priced at its worst case and refused: nothing reaches the provider
    assert run.wait(timeout=TIMEOUT) == "failed"
    assert provider.count() == 0
    step = steps(embedded, run.id)["frugal"]
    assert (step.state, step.attempt) == ("discarded", 1)  # max_retries=3, none spent

    # And the worst case is the prompt counted with tiktoken plus the default cap
    prompt = count_prompt_tokens(MODEL, user("Summarize the news"))
    assert prompt.exact and prompt.tokens == 12
    worst = price(prompt.tokens, DEFAULT_MAX_TOKENS)
    assert worst > STEP_BUDGET
    assert step.error == (
        f"BudgetExceeded: A call to {MODEL} could cost ${worst:.6f}, more than is left of "
        f"the budget of step 'frugal' (llm_actor max_cost_usd): ${STEP_BUDGET:.6f}, of which "
        "$0.000000 is spent or held by calls in flight. Nothing was sent."
    )
    [log] = baton.debug.get_logs(run.id)
    assert log.error == step.error and log.response_text is None
    assert baton.stats.workflow_cost(run.id).calls == 0


def test_a_call_whose_max_tokens_fits_the_step_budget_is_sent_with_it(
    embedded: Cluster, provider: FakeProvider
) -> None:
    provider.respond("short", prompt_tokens=12, completion_tokens=40)
    message = actors(embedded).frugal.message("Summarize the news", provider.url, max_tokens=50)
    run = baton.Workflow(name="fits").add("frugal", message).insert()
    assert run.wait(timeout=TIMEOUT) == "completed"
    [request] = provider.requests
    assert request.body["max_tokens"] == 50
    assert baton.stats.workflow_cost(run.id).total_cost_usd == pytest.approx(price(12, 40))


def test_under_a_budget_the_default_cap_is_sent_as_max_tokens_and_without_one_nothing_is(
    embedded: Cluster, provider: FakeProvider
) -> None:
    chat = actors(embedded).chat
    capped = (
        baton.Workflow(name="capped", max_cost_usd=1.0)
        .add("chat", chat.message(["hi"], provider.url))
        .insert()
    )
    free = baton.Workflow(name="free").add("chat", chat.message(["hi"], provider.url)).insert()
    assert capped.wait(timeout=TIMEOUT) == free.wait(timeout=TIMEOUT) == "completed"
    caps = sorted(str(r.body.get("max_tokens")) for r in provider.requests)
    assert caps == [str(DEFAULT_MAX_TOKENS), "None"]
    [capped_log] = baton.debug.get_logs(capped.id)
    assert capped_log.params is not None and capped_log.params["max_tokens"] == 1024


def test_the_step_budget_counts_what_earlier_calls_spent(
    embedded: Cluster, provider: FakeProvider
) -> None:
    # Given a step budget that covers one call of this size but not two
    provider.respond("x", prompt_tokens=10, completion_tokens=100)
    one = price(count_prompt_tokens(MODEL, user("q")).tokens, 100)

    @llm_actor(broker=embedded.broker, model=MODEL, max_cost_usd=1.5 * one, max_retries=2)
    def twice(api_base: str) -> None:
        for _ in range(2):
            complete(user("q"), api_base=api_base, api_key="k", max_tokens=100)

    # When it runs
    run = baton.Workflow(name="twice").add("twice", twice.message(provider.url)).insert()

    # Then the second call is refused, the step discarded, the first call's spend kept
    assert run.wait(timeout=TIMEOUT) == "failed"
    assert provider.count() == 1
    error = steps(embedded, run.id)["twice"].error or ""
    assert error.startswith("BudgetExceeded: ") and f"${price(10, 100):.6f} is spent" in error
    assert baton.stats.workflow_cost(run.id).total_cost_usd == pytest.approx(price(10, 100))


def test_parallel_steps_cannot_overspend_the_workflow_budget_together(
    llm_cluster: Cluster, provider: FakeProvider
) -> None:
    # Given five parallel steps whose calls each cost exactly their worst case, and a
    # workflow budget that holds two and a half of them
    prompt = count_prompt_tokens(MODEL, user("same question")).tokens
    provider.respond("answer", prompt_tokens=prompt, completion_tokens=100, delay=0.3)
    each = price(prompt, 100)
    budget = 2.5 * each
    wf = baton.Workflow(name="parallel", max_cost_usd=budget)
    chat = actors(llm_cluster).chat
    for i in range(5):
        wf.add(f"s{i}", chat.message(["same question"], provider.url, params={"max_tokens": 100}))

    # When they all run at once
    run = wf.insert()
    assert run.wait(timeout=TIMEOUT) == "failed"

    # Then exactly two were paid for, the others discarded before sending anything
    views = steps(llm_cluster, run.id)
    outcomes = sorted((v.state, (v.error or "").split(":")[0]) for v in views.values())
    assert outcomes == [("completed", "")] * 2 + [("discarded", "BudgetExceeded")] * 3
    assert all(v.attempt == 1 for v in views.values())
    assert provider.count() == 2
    report = baton.stats.workflow_cost(run.id, store=llm_cluster.store)
    assert report.calls == 2 and report.total_cost_usd <= budget
    assert report.max_cost_usd == budget
    spent, reserved = ledger(llm_cluster.store, run.id)
    assert spent == pytest.approx(report.total_cost_usd) and reserved == pytest.approx(0.0)


def test_a_model_litellm_cannot_price_is_refused_under_a_budget_and_free_without(
    embedded: Cluster, provider: FakeProvider
) -> None:
    chat = actors(embedded).chat
    unknown = "openai/house-model-7"
    budgeted = (
        baton.Workflow(name="unpriced", max_cost_usd=1.0)
        .add("chat", chat.message(["hi"], provider.url, model=unknown))
        .insert()
    )
    open_ended = (
        baton.Workflow(name="unpriced-free")
        .add("chat", chat.message(["hi"], provider.url, model=unknown))
        .insert()
    )
    assert budgeted.wait(timeout=TIMEOUT) == "failed"
    assert open_ended.wait(timeout=TIMEOUT) == "completed"
    error = steps(embedded, budgeted.id)["chat"].error or ""
    assert error.startswith(f"BudgetExceeded: Cannot budget a call to {unknown!r}")
    assert provider.count() == 1  # only the workflow without a budget sent its call
    assert open_ended.results()["chat"]["costs"] == [0.0]


def test_a_reservation_is_atomic_and_a_new_run_reclaims_what_a_dead_one_held() -> None:
    # Given a step that a worker has claimed, in a workflow with a $1 budget
    before = dramatiq.broker.global_broker
    setup = embedded_setup()  # no worker: the test drives the store
    store = setup.store

    @baton.workflow_actor(broker=setup.broker)
    def noop() -> None: ...

    wf = baton.Workflow(name="ledger", max_cost_usd=1.0).add("a", noop.message())
    wf.insert()
    now = dt.datetime.now(dt.UTC)
    assert isinstance(store.claim(wf.id, "a", worker_id="w1", stale_before=now), baton.store.Claim)

    # When a call reserves $0.60, a second reservation of $0.60 is refused and undone whole
    assert store.reserve_llm(wf.id, "a", 0.6, step_limit=None, running=True) is None
    refusal = store.reserve_llm(wf.id, "a", 0.6, step_limit=None, running=True)
    assert refusal is not None and refusal.scope == "workflow"
    assert (refusal.limit, refusal.reserved) == pytest.approx((1.0, 0.6))
    assert ledger(store, wf.id) == pytest.approx((0.0, 0.6))

    # And a step budget is checked on the step's own ledger
    refusal = store.reserve_llm(wf.id, "a", 0.3, step_limit=0.5, running=True)
    assert refusal is not None and refusal.scope == "step"

    # When the worker dies and the step's next run makes its first reservation
    assert store.reserve_llm(wf.id, "a", 0.5, step_limit=None, running=True, reclaim=True) is None

    # Then the dead run's $0.60 was given back first
    assert ledger(store, wf.id) == pytest.approx((0.0, 0.5))

    # And a step that no longer executes gets no reservation at all
    store.cancel_workflow(wf.id)
    refusal = store.reserve_llm(wf.id, "a", 0.1, step_limit=None, running=True)
    assert refusal is not None and (refusal.scope, refusal.state) == ("not_running", "cancelled")
    store.dispose()
    dramatiq.broker.global_broker = before
