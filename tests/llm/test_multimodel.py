"""MultiModel: one step per model, a synthesize step that reads the answers that arrived."""

from __future__ import annotations

import pytest

import baton_dramatiq as baton
from baton_dramatiq.llm import MultiModel
from baton_dramatiq.llm.testing import FakeProvider
from tests.llm.conftest import actors
from tests.support.cluster import Cluster

TIMEOUT = 30
MODELS = ["openai/gpt-4o-mini", "openai/gpt-4o", "openai/gpt-4.1-mini"]


def fan_out(cluster: Cluster, provider: FakeProvider, min_successes: int) -> baton.Workflow:
    a = actors(cluster)
    wf = baton.Workflow(name="panel").add("source", cluster.actors.echo.message("doc"))
    return MultiModel.fan_out(
        wf,
        "summary",
        a.chat,
        models=MODELS,
        args=(["Summarize the doc"], provider.url),
        deps=["source"],
        synthesize=a.synthesize,
        min_successes=min_successes,
    )


def test_fan_out_over_three_models_where_one_fails_synthesizes_the_other_two(
    llm_cluster: Cluster, provider: FakeProvider
) -> None:
    # Given three models, one of which always fails
    provider.respond(lambda request: f"{request.model}: short")
    provider.fail(500, model="openai/gpt-4.1-mini", times=10)

    # When the fan-out runs
    run = fan_out(llm_cluster, provider, min_successes=1).insert()

    # Then the synthesize step ran once, with the two answers that arrived
    assert run.wait(timeout=TIMEOUT) == "completed"
    assert run.results()["summary"] == {
        "openai/gpt-4o": "gpt-4o: short",
        "openai/gpt-4o-mini": "gpt-4o-mini: short",
    }
    views = {v.step_name: v for v in baton.query.get_workflow_steps(run.id)}
    assert list(views) == ["source", *[f"summary:{m}" for m in MODELS], "summary"]
    assert views["summary:openai/gpt-4.1-mini"].state == "discarded"
    assert views["summary:openai/gpt-4.1-mini"].attempt == 3  # max_retries=2
    assert views["summary"].deps == tuple(f"summary:{m}" for m in MODELS)
    assert baton.query.get_workflow(run.id).failed_steps == ("summary:openai/gpt-4.1-mini",)

    # And the costs are split by model, the failing model costing nothing
    report = baton.stats.workflow_cost(run.id)
    assert set(report.by_model) == {"openai/gpt-4o-mini", "openai/gpt-4o"}
    assert report.by_model["openai/gpt-4o"].total_cost_usd > 0
    assert report.by_step["summary:openai/gpt-4o"].calls == 1


def test_fewer_successes_than_min_successes_fails_the_synthesize_step_cleanly(
    embedded: Cluster, provider: FakeProvider
) -> None:
    provider.fail(500, model="openai/gpt-4.1-mini", times=10)
    run = fan_out(embedded, provider, min_successes=3).insert()
    assert run.wait(timeout=TIMEOUT) == "failed"
    views = {v.step_name: v for v in baton.query.get_workflow_steps(run.id)}
    summary = views["summary"]
    assert (summary.state, summary.attempt) == ("discarded", 1)  # no retry can help it
    assert summary.error == (
        "NotEnoughOutputs: Step 'summary': 2 of 3 models succeeded, fewer than "
        "min_successes=3 (failed: openai/gpt-4.1-mini)"
    )
    assert views["summary:openai/gpt-4o"].state == "completed"
    assert "summary" not in run.results()


def test_fan_out_names_are_checked_before_any_step_is_added(
    embedded: Cluster, provider: FakeProvider
) -> None:
    a = actors(embedded)
    wf = baton.Workflow(name="checked").add("summary:openai/gpt-4o", a.chat.message([], ""))

    def attempt(**options: object) -> None:
        args = {"models": MODELS, "synthesize": a.synthesize, **options}
        MultiModel.fan_out(wf, "summary", a.chat, **args)

    with pytest.raises(
        baton.DuplicateStepError, match="already has a step 'summary:openai/gpt-4o'"
    ):
        attempt()
    with pytest.raises(baton.DuplicateStepError, match="lists model"):
        MultiModel.fan_out(wf, "other", a.chat, models=["m", "m"])
    with pytest.raises(baton.InvalidStepError, match="1-255 characters"):
        MultiModel.fan_out(wf, "long", a.chat, models=["m", "x" * 300])
    with pytest.raises(baton.InvalidStepError, match="control character"):
        MultiModel.fan_out(wf, "bad\n", a.chat, models=["m"])
    with pytest.raises(baton.InvalidStepError, match="must not hold 'model'"):
        MultiModel.fan_out(wf, "k", a.chat, models=["m"], kwargs={"model": "x"})
    with pytest.raises(baton.ConfigurationError, match="min_successes must be between 1 and 3"):
        MultiModel.fan_out(wf, "k", a.chat, models=MODELS, synthesize=a.synthesize, min_successes=4)
    with pytest.raises(baton.InvalidStepError, match="synthesize must be a workflow actor"):
        MultiModel.fan_out(wf, "k", a.chat, models=["m"], synthesize=embedded.actors.plain)
    assert [s.name for s in wf.steps] == ["summary:openai/gpt-4o"]  # nothing was added


def test_outputs_outside_a_synthesize_step_says_where_it_works(embedded: Cluster) -> None:
    @baton.workflow_actor(broker=embedded.broker, max_retries=0)
    def lost() -> None:
        MultiModel.outputs()

    run = baton.Workflow(name="lost").add("lost", lost.message()).insert()
    assert run.wait(timeout=TIMEOUT) == "failed"
    [step] = baton.query.get_workflow_steps(run.id)
    assert step.error is not None
    assert "is not the synthesize step of a MultiModel.fan_out" in step.error
    with pytest.raises(baton.NotInWorkflow):
        MultiModel.outputs()
