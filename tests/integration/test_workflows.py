"""Workflows end to end, on SQLite + StubBroker and on PostgreSQL + Redis + worker processes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import baton_dramatiq as baton
from tests.support.cluster import Cluster, wait_for

TIMEOUT = 30


def diamond(c: Cluster, name: str = "research:ai") -> baton.Workflow:
    a = c.actors
    return (
        baton.Workflow(name=name)
        .add("fetch_sources", a.echo.message({"documents": ["d1", "d2"]}))
        .add("summarize", a.record_deps.message(), deps=["fetch_sources"])
        .add("keywords", a.record_deps.message(), deps=["fetch_sources"])
        .add("credibility", a.record_deps.message(), deps=["fetch_sources"])
        .add(
            "compile_brief", a.record_deps.message(), deps=["summarize", "keywords", "credibility"]
        )
    )


def collect(stream: baton.events.EventStream) -> list[baton.Event]:
    return list(stream)


def step_states(c: Cluster, workflow_id: str) -> dict[str, str]:
    return {
        s.step_name: s.state for s in baton.query.get_workflow_steps(workflow_id, store=c.store)
    }


def test_the_diamond_completes_and_its_fan_in_sees_every_result(cluster: Cluster) -> None:
    # Given a subscriber listening before the diamond is inserted
    wf = diamond(cluster)
    stream = baton.events.subscribe_workflow(wf.id, timeout=TIMEOUT)

    # When it runs
    run = wf.insert()
    events = collect(stream)

    # Then it completes, and compile_brief saw all three of its dependencies' results
    assert run.wait(timeout=TIMEOUT) == "completed"
    results = run.results()
    assert results["compile_brief"] == {
        "step": "compile_brief",
        "saw": ["credibility", "keywords", "summarize"],
    }
    assert results["summarize"] == {"step": "summarize", "saw": ["fetch_sources"]}
    assert results["fetch_sources"] == {"documents": ["d1", "d2"]}
    assert sorted(cluster.runs(run.id)) == sorted(results)  # every body ran exactly once

    # And the events came in a valid order, ending with one workflow_finished
    assert [e.event for e in events].count("workflow_finished") == 1
    assert events[-1].event == "workflow_finished"
    assert events[-1].payload["outcome"] == "completed"
    assert events[-1].payload["failed_steps"] == []
    steps = [e.payload for e in events[:-1]]
    completed_at = {p["step_name"]: i for i, p in enumerate(steps) if p["state"] == "completed"}
    assert set(completed_at) == set(results)
    deps = {
        "summarize": ["fetch_sources"],
        "keywords": ["fetch_sources"],
        "credibility": ["fetch_sources"],
        "fetch_sources": [],
        "compile_brief": ["summarize", "keywords", "credibility"],
    }
    for i, payload in enumerate(steps):
        for dep in deps[payload["step_name"]]:
            assert completed_at[dep] < i, f"{payload['step_name']} before {dep} completed"
    for name in results:
        mine = [p for p in steps if p["step_name"] == name]
        assert [(p["state"], p["version"], p["attempt"]) for p in mine] == [
            ("executing", 1, 1),
            ("completed", 2, 1),
        ]
        assert (
            mine[-1]["has_result"] is True
            and mine[-1]["worker"] == "record_deps"
            or name == "fetch_sources"
        )
        assert set(mine[0]) >= {
            "workflow_id",
            "workflow_name",
            "step_name",
            "state",
            "worker",
            "attempt",
            "has_result",
            "error",
            "at",
            "version",
        }
        assert mine[0]["workflow_name"] == "research:ai"


def test_a_step_reads_results_only_of_its_declared_dependencies(cluster: Cluster) -> None:
    a = cluster.actors
    wf = (
        baton.Workflow(name="reads")
        .add("source", a.echo.message([1, "two", None]))
        .add("other", a.echo.message("not mine"))
        .add("reader", a.ask.message("source"), deps=["source"])
        .add("snoop", a.ask.message("other"), deps=["source"])
    )
    run = wf.insert()
    assert run.wait(timeout=TIMEOUT) == "completed"
    results = run.results()
    assert results["reader"] == [1, "two", None]
    assert results["snoop"]["error"] == "UnknownDependency"
    assert "'other' is not a dependency of step 'snoop'" in results["snoop"]["message"]


def test_a_none_result_counts_as_a_result(cluster: Cluster) -> None:
    a = cluster.actors
    run = baton.Workflow(name="none").add("nothing", a.echo.message(None)).insert()
    assert run.wait(timeout=TIMEOUT) == "completed"
    assert run.results() == {"nothing": None}
    [step] = baton.query.get_workflow_steps(run.id, store=cluster.store)
    assert step.has_result is True and step.state == "completed"


def test_async_steps_run_like_sync_ones(cluster: Cluster) -> None:
    a = cluster.actors
    wf = (
        baton.Workflow(name="async")
        .add("first", a.async_echo.message("x"))
        .add("second", a.async_echo.message("y"), deps=["first"])
    )
    run = wf.insert()
    assert run.wait(timeout=TIMEOUT) == "completed"
    second = run.results()["second"]
    assert second["value"] == "y" and second["step"] == "second"
    assert second["deps"] == {"first": {"value": "x", "deps": {}, "step": "first"}}


def test_a_discarded_step_cancels_everything_downstream(cluster: Cluster) -> None:
    # Given root -> bad -> child -> grandchild, and root -> fine
    a = cluster.actors
    wf = (
        baton.Workflow(name="failing")
        .add("root", a.echo.message(1))
        .add("bad", a.boom.message("kaput"), deps=["root"])
        .add("child", a.echo.message(2), deps=["bad"])
        .add("grandchild", a.echo.message(3), deps=["child", "root"])
        .add("fine", a.echo.message(4), deps=["root"])
    )
    stream = baton.events.subscribe_workflow(wf.id, timeout=TIMEOUT)
    run = wf.insert()
    events = collect(stream)

    # Then the failure is discarded, its downstream cancelled, the rest completed
    assert run.wait(timeout=TIMEOUT) == "failed"
    assert step_states(cluster, run.id) == {
        "root": "completed",
        "bad": "discarded",
        "child": "cancelled",
        "grandchild": "cancelled",
        "fine": "completed",
    }
    view = baton.query.get_workflow(run.id, store=cluster.store)
    assert view.outcome == "failed" and view.state == "failed"
    assert view.failed_steps == ("bad",)
    assert "child" not in cluster.runs(run.id) and "grandchild" not in cluster.runs(run.id)
    steps = {s.step_name: s for s in baton.query.get_workflow_steps(run.id, store=cluster.store)}
    assert steps["bad"].error == "RuntimeError: kaput"
    assert steps["child"].attempt == 0  # never ran
    cancelled = {e.payload["step_name"] for e in events if e.payload.get("state") == "cancelled"}
    assert cancelled == {"child", "grandchild"}
    assert events[-1].payload == {
        **events[-1].payload,
        "outcome": "failed",
        "failed_steps": ["bad"],
    }


def test_allow_failed_deps_runs_with_the_results_that_arrived(cluster: Cluster) -> None:
    a = cluster.actors
    wf = (
        baton.Workflow(name="tolerant")
        .add("good", a.echo.message("g"))
        .add("bad", a.boom.message())
        .add("after_bad", a.echo.message(0), deps=["bad"])
        .add(
            "judge", a.tolerant.message(), deps=["good", "bad", "after_bad"], allow_failed_deps=True
        )
    )
    run = wf.insert()
    # The only sink completed, so the workflow completed — with a failed step listed
    assert run.wait(timeout=TIMEOUT) == "completed"
    assert run.results()["judge"] == {"ok": {"good": "g"}, "failed": ["bad", "after_bad"]}
    view = baton.query.get_workflow(run.id, store=cluster.store)
    assert view.failed_steps == ("bad",)
    assert step_states(cluster, run.id)["after_bad"] == "cancelled"


def test_each_workflow_finished_event_is_recorded_as_published(
    cluster: Cluster,
) -> None:
    # Given workflows that finish at about the same time, one with a failed step
    a = cluster.actors
    runs = [diamond(cluster, name=f"brief:{n}").insert() for n in range(4)]
    runs.append(baton.Workflow(name="failing").add("bad", a.boom.message()).insert())

    # When they have finished
    assert [run.wait(timeout=TIMEOUT) for run in runs] == ["completed"] * 4 + ["failed"]

    # Then none is left for the Sweeper to publish again
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    wait_for(lambda: cluster.store.unpublished_finishes(before=later, limit=10) == [])


def test_a_failing_step_is_retried_and_its_attempts_counted(cluster: Cluster) -> None:
    a = cluster.actors
    wf = baton.Workflow(name="flaky").add("flaky", a.flaky.message(2))
    stream = baton.events.subscribe_workflow(wf.id, timeout=TIMEOUT)
    run = wf.insert()
    events = collect(stream)
    assert run.wait(timeout=TIMEOUT) == "completed"
    assert run.results() == {"flaky": {"attempt": 3}}
    states = [(e.payload["state"], e.payload["attempt"]) for e in events[:-1]]
    assert states == [
        ("executing", 1),
        ("retryable", 1),
        ("executing", 2),
        ("retryable", 2),
        ("executing", 3),
        ("completed", 3),
    ]
    assert events[1].payload["error"] == "ValueError: attempt 1 fails"


def test_a_step_out_of_retries_is_discarded(cluster: Cluster) -> None:
    a = cluster.actors
    run = baton.Workflow(name="hopeless").add("flaky", a.flaky.message(99)).insert()
    assert run.wait(timeout=TIMEOUT) == "failed"
    [step] = baton.query.get_workflow_steps(run.id, store=cluster.store)
    assert step.state == "discarded"
    assert step.attempt == 4  # the first run and max_retries=3 retries
    assert step.error == "ValueError: attempt 4 fails"
    assert cluster.runs(run.id) == ["flaky"] * 4


def test_an_error_no_retry_can_fix_discards_the_step_at_once(cluster: Cluster) -> None:
    run = baton.Workflow(name="fatal").add("fatal", cluster.actors.hopeless.message()).insert()
    assert run.wait(timeout=TIMEOUT) == "failed"
    [step] = baton.query.get_workflow_steps(run.id, store=cluster.store)
    assert (step.state, step.attempt) == ("discarded", 1)
    assert step.error == "BatonError: no retry can fix this"
    assert cluster.runs(run.id) == ["fatal"]  # max_retries=3, yet it ran once


def test_a_snoozed_step_runs_again_without_spending_a_retry(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Given a step with max_retries=0 that snoozes on its first run
    a = cluster.actors
    wf = (
        baton.Workflow(name="sleepy")
        .add("nap", a.snoozer.message(str(tmp_path / "marker"), 0.2))
        .add("after", a.echo.message("woke"), deps=["nap"])
    )
    stream = baton.events.subscribe_workflow(wf.id, timeout=TIMEOUT)
    run = wf.insert()
    events = collect(stream)
    assert run.wait(timeout=TIMEOUT) == "completed"
    assert run.results()["nap"] == {"attempt": 1}
    nap = [
        (e.payload["state"], e.payload["attempt"])
        for e in events
        if e.payload.get("step_name") == "nap"
    ]
    assert nap == [("executing", 1), ("snoozed", 1), ("executing", 1), ("completed", 1)]


def test_cancel_mid_run_stops_the_workflow_and_drops_the_late_result(cluster: Cluster) -> None:
    a = cluster.actors
    wf = (
        baton.Workflow(name="cancel-me")
        .add("slow", a.sleeper.message(1.0))
        .add("next", a.echo.message("never"), deps=["slow"])
    )
    stream = baton.events.subscribe_workflow(wf.id, timeout=TIMEOUT)
    run = wf.insert()
    wait_for(lambda: step_states(cluster, run.id)["slow"] == "executing")

    run.cancel()

    assert run.status() == "cancelled"
    events = collect(stream)
    assert events[-1].payload["outcome"] == "cancelled"
    assert {e.payload["step_name"] for e in events if e.payload.get("state") == "cancelled"} == {
        "slow",
        "next",
    }
    # the sleeping body finishes afterwards: its result is dropped, its dependent never runs
    wait_for(lambda: "slow" in cluster.runs(run.id))
    import time

    time.sleep(1.5)
    assert step_states(cluster, run.id) == {"slow": "cancelled", "next": "cancelled"}
    assert run.results() == {}
    assert cluster.runs(run.id) == ["slow"]
    run.cancel()  # a second cancel changes nothing
    assert run.status() == "cancelled"


def test_a_result_that_is_not_json_discards_the_step_without_a_retry(cluster: Cluster) -> None:
    a = cluster.actors
    run = baton.Workflow(name="bad-result").add("sets", a.bad_result.message("set")).insert()
    assert run.wait(timeout=TIMEOUT) == "failed"
    [step] = baton.query.get_workflow_steps(run.id, store=cluster.store)
    assert step.state == "discarded"
    assert step.error is not None and step.error.startswith("ResultError: ")
    assert "'sets'" in step.error and "not JSON" in step.error
    assert cluster.runs(run.id) == ["sets"]  # max_retries=2, yet no retry was spent


def test_an_oversize_result_discards_the_step_with_a_clear_error(cluster: Cluster) -> None:
    a = cluster.actors
    run = baton.Workflow(name="big").add("huge", a.bad_result.message(str(2 << 20))).insert()
    assert run.wait(timeout=TIMEOUT) == "failed"
    [step] = baton.query.get_workflow_steps(run.id, store=cluster.store)
    assert step.error is not None and step.error.startswith(
        "ResultError: Step 'huge' returned 2097154 bytes of JSON; the limit is 1048576"
    )
    assert cluster.runs(run.id) == ["huge"]


def test_duplicate_and_early_deliveries_are_dropped_by_the_gate(cluster: Cluster) -> None:
    # Given a workflow whose second step waits on a slow first one
    a = cluster.actors
    wf = (
        baton.Workflow(name="dupes")
        .add("slow", a.sleeper.message(0.5))
        .add("after", a.echo.message("once"), deps=["slow"])
    )
    run = wf.insert()
    after_message = next(s.message for s in wf.steps if s.name == "after")
    slow_message = next(s.message for s in wf.steps if s.name == "slow")
    options = {"baton_step": [wf.id, "after"]}

    # When 'after' is delivered before its dependency finished, it is dropped
    cluster.broker.enqueue(after_message.copy(options=options))
    assert run.wait(timeout=TIMEOUT) == "completed"

    # And when both steps are delivered again after they finished, nothing runs twice
    cluster.broker.enqueue(after_message.copy(options=options))
    cluster.broker.enqueue(slow_message.copy(options={"baton_step": [wf.id, "slow"]}))
    import time

    time.sleep(0.5)
    assert sorted(cluster.runs(run.id)) == ["after", "slow"]
    assert all(s.version == 2 for s in baton.query.get_workflow_steps(run.id, store=cluster.store))


def test_ordinary_actors_pass_through_the_middleware(cluster: Cluster, tmp_path: Path) -> None:
    target = tmp_path / "plain.txt"
    cluster.actors.plain.send(str(target))
    wait_for(target.exists)


def test_late_subscribers_replay_the_store_and_converge(cluster: Cluster) -> None:
    run = diamond(cluster, "replayed").insert()
    assert run.wait(timeout=TIMEOUT) == "completed"
    events = list(baton.events.subscribe_workflow(run.id, replay=True, timeout=5))
    steps = [e.payload for e in events if e.event == "workflow_step_updated"]
    assert {p["step_name"]: (p["state"], p["version"]) for p in steps} == {
        name: ("completed", 2)
        for name in ("fetch_sources", "summarize", "keywords", "credibility", "compile_brief")
    }
    assert events[-1].event == "workflow_finished" and events[-1].payload["outcome"] == "completed"
    assert [s.step_name for s in baton.query.get_workflow_steps(run.id, store=cluster.store)][
        0
    ] == "fetch_sources"


def test_workflow_run_get_and_list_find_inserted_workflows(cluster: Cluster) -> None:
    first = diamond(cluster, "listing:one").insert()
    second = baton.Workflow(name="listing:two").add("x", cluster.actors.echo.message(1)).insert()
    assert first.wait(timeout=TIMEOUT) == second.wait(timeout=TIMEOUT) == "completed"
    again = baton.WorkflowRun.get(first.id)
    assert (again.id, again.name, again.status()) == (first.id, "listing:one", "completed")
    names = [w.name for w in baton.query.list_workflows(name_prefix="listing:")]
    assert names == ["listing:two", "listing:one"]
    assert [w.id for w in baton.query.list_workflows(state="completed", limit=1)] == [second.id]
    assert baton.query.list_workflows(state="running") == []
    with pytest.raises(baton.WorkflowNotFound):
        baton.WorkflowRun.get("no-such-id")
