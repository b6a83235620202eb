"""Fan-in under pressure: many workflows at once, random DAGs, several worker processes."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import baton_dramatiq as baton
from tests.support.cluster import Cluster, EmbeddedCluster, PostgresCluster


class EventLog:
    """Every event on workflow:all, collected by a thread for the length of a test."""

    def __init__(self, bus: baton.EventBus) -> None:
        self.events: list[baton.Event] = []
        self._stream = baton.events.subscribe_all(bus=bus, timeout=None)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._stream:
                self.events.append(event)
        except Exception:  # closed underneath us
            pass

    def finished(self, workflow_id: str) -> list[baton.Event]:
        return [
            e
            for e in self.events
            if e.event == "workflow_finished" and e.payload["workflow_id"] == workflow_id
        ]

    def close(self) -> None:
        self._stream.close()


def test_200_diamonds_at_once_on_two_worker_processes(pg_template: str) -> None:
    cluster = PostgresCluster(processes=2, threads=8)
    log = EventLog(cluster.events)
    try:
        a = cluster.actors
        runs = [
            baton.Workflow(name=f"diamond:{i}")
            .add("fetch_sources", a.echo.message(i))
            .add("summarize", a.record_deps.message(), deps=["fetch_sources"])
            .add("keywords", a.record_deps.message(), deps=["fetch_sources"])
            .add("credibility", a.record_deps.message(), deps=["fetch_sources"])
            .add(
                "compile_brief",
                a.record_deps.message(),
                deps=["summarize", "keywords", "credibility"],
            )
            .insert()
            for i in range(200)
        ]
        for run in runs:
            assert run.wait(timeout=120) == "completed"
            assert run.results()["compile_brief"]["saw"] == ["credibility", "keywords", "summarize"]
            executions = collections.Counter(cluster.runs(run.id))
            assert executions == {
                name: 1
                for name in (
                    "fetch_sources",
                    "summarize",
                    "keywords",
                    "credibility",
                    "compile_brief",
                )
            }
        _wait_for_events(log, [r.id for r in runs])
        for run in runs:
            assert len(log.finished(run.id)) == 1
    finally:
        log.close()
        cluster.close()


def _wait_for_events(log: EventLog, ids: list[str]) -> None:
    from tests.support.cluster import wait_for

    wait_for(lambda: all(log.finished(i) for i in ids), timeout=30)


# -- random DAGs --------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> list[tuple[str, list[str], bool, bool]]:
    """(name, deps, fails, allow_failed_deps) per step, listed in a shuffled order."""
    size = draw(st.integers(min_value=1, max_value=12))
    steps = []
    for i in range(size):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=4)) if i else []
        fails = draw(st.integers(0, 6)) == 0
        tolerant = bool(deps) and draw(st.integers(0, 4)) == 0
        steps.append((f"s{i}", [f"s{d}" for d in deps], fails, tolerant))
    return draw(st.permutations(steps))


def expected(steps: list[tuple[str, list[str], bool, bool]]) -> tuple[dict[str, str], str]:
    """The states a correct engine ends in, and the outcome."""
    by_name = {name: (deps, fails, tolerant) for name, deps, fails, tolerant in steps}
    state: dict[str, str] = {}

    def resolve(name: str) -> str:
        if name not in state:
            deps, fails, tolerant = by_name[name]
            dep_states = [resolve(d) for d in deps]
            if not tolerant and any(s != "completed" for s in dep_states):
                state[name] = "cancelled"
            else:
                state[name] = "discarded" if fails else "completed"
        return state[name]

    for name in by_name:
        resolve(name)
    sinks = set(by_name) - {d for deps, _, _ in by_name.values() for d in deps}
    outcome = "completed" if all(state[s] == "completed" for s in sinks) else "failed"
    return state, outcome


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def shared_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, EventLog]]:
    if request.param == "postgres":
        request.getfixturevalue("pg_template")
        cluster: Cluster = PostgresCluster(processes=2, threads=8)
    else:
        cluster = EmbeddedCluster(tmp_path_factory.mktemp("dag"))
    log = EventLog(cluster.events)
    yield cluster, log
    log.close()
    cluster.close()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=dags())
def test_random_dags_run_every_step_after_its_dependencies_once(
    shared_cluster: tuple[Cluster, EventLog], steps: list[tuple[str, list[str], bool, bool]]
) -> None:
    cluster, log = shared_cluster
    a = cluster.actors
    wf = baton.Workflow(name="random-dag")
    for name, deps, fails, tolerant in steps:
        message = a.boom.message(f"{name} fails") if fails else a.record_deps.message(0.002)
        wf.add(name, message, deps=deps, allow_failed_deps=tolerant)
    run = wf.insert()

    states, outcome = expected(steps)
    assert run.wait(timeout=60) == outcome
    views = {s.step_name: s for s in baton.query.get_workflow_steps(run.id, store=cluster.store)}
    assert {name: v.state for name, v in views.items()} == states

    # every step that ran started after each of its dependencies finished, and ran once
    executions = collections.Counter(cluster.runs(run.id))
    ran = {name for name, s in states.items() if s != "cancelled"}
    assert executions == {name: 1 for name in ran}
    results = run.results()
    for name, deps, _, _ in steps:
        view = views[name]
        if name not in ran:
            assert view.attempt == 0 and view.started_at is None
            continue
        assert view.attempt == 1
        for dep in deps:
            dep_view = views[dep]
            assert dep_view.finished_at is not None and view.started_at is not None
            assert view.started_at >= dep_view.finished_at, f"{name} started before {dep} finished"
        if name in results:
            assert results[name]["saw"] == sorted(d for d in deps if states[d] == "completed")

    # the workflow finished exactly once: one completion row, one event
    view = baton.query.get_workflow(run.id, store=cluster.store)
    assert view.outcome == outcome
    assert list(view.failed_steps) == [n for n in views if states[n] == "discarded"]
    _wait_for_events(log, [run.id])
    assert len(log.finished(run.id)) == 1


def test_the_property_reference_model_is_itself_right() -> None:
    steps = [
        ("a", [], True, False),
        ("b", ["a"], False, False),
        ("c", ["a"], False, True),
        ("d", [], False, False),
    ]
    assert expected(steps) == (
        {"a": "discarded", "b": "cancelled", "c": "completed", "d": "completed"},
        "failed",
    )
    assert expected([("a", [], False, False)]) == ({"a": "completed"}, "completed")
