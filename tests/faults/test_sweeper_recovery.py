"""Crashes at each point between two writes: the Sweeper finishes every workflow, once."""

from __future__ import annotations

import collections
import contextlib
import json
from collections.abc import Iterator

import redis

import baton_dramatiq as baton
from tests.integration.test_pressure import EventLog
from tests.support import services
from tests.support.cluster import PostgresCluster, wait_for

SWEEPER = {"BATON_TEST_SWEEP_INTERVAL": "0.3", "BATON_TEST_RESCUE_AFTER": "1"}


@contextlib.contextmanager
def observed(**env: str) -> Iterator[tuple[PostgresCluster, EventLog]]:
    """A cluster of one worker process (2 threads) started with `env`, and a log of
    every event, both closed on exit."""
    cluster = PostgresCluster(processes=1, threads=2, **env)
    log = EventLog(cluster.events)
    try:
        yield cluster, log
    finally:
        log.close()
        cluster.close()


def diamond(cluster: PostgresCluster) -> baton.Workflow:
    a = cluster.actors
    return (
        baton.Workflow(name="crash")
        .add("fetch_sources", a.echo.message({"documents": [1, 2]}))
        .add("summarize", a.record_deps.message(), deps=["fetch_sources"])
        .add("keywords", a.record_deps.message(), deps=["fetch_sources"])
        .add("credibility", a.record_deps.message(), deps=["fetch_sources"])
        .add(
            "compile_brief", a.record_deps.message(), deps=["summarize", "keywords", "credibility"]
        )
    )


def states(cluster: PostgresCluster, workflow_id: str) -> dict[str, str]:
    steps = baton.query.get_workflow_steps(workflow_id, store=cluster.store)
    return {s.step_name: s.state for s in steps}


def assert_finished_once(cluster: PostgresCluster, log: EventLog, run: baton.WorkflowRun) -> None:
    assert run.wait(timeout=60) == "completed"
    assert run.results()["compile_brief"]["saw"] == ["credibility", "keywords", "summarize"]
    assert collections.Counter(cluster.runs(run.id)) == {
        "fetch_sources": 1,
        "summarize": 1,
        "keywords": 1,
        "credibility": 1,
        "compile_brief": 1,
    }
    wait_for(lambda: log.finished(run.id), timeout=30)
    view = baton.query.get_workflow(run.id, store=cluster.store)
    assert view.outcome == "completed"
    assert len(log.finished(run.id)) == 1


def test_a_crash_after_a_commit_before_the_enqueue_is_recovered_by_the_sweeper(
    pg_template: str,
) -> None:
    # Given a worker that dies right after committing fetch_sources' result,
    # before it enqueues the three steps that became ready
    with observed(BATON_TEST_FAULT="after_commit") as (cluster, log):
        run = diamond(cluster).insert()
        assert cluster.workers[0].wait(timeout=30) == -9
        assert states(cluster, run.id) == {
            "fetch_sources": "completed",
            "summarize": "available",
            "keywords": "available",
            "credibility": "available",
            "compile_brief": "pending",
        }

        # When a healthy worker with a Sweeper starts
        cluster.start_worker(wait=True, **SWEEPER)

        # Then the ready steps are rescued and the workflow finishes, exactly once
        assert_finished_once(cluster, log, run)


def test_a_crash_before_workflow_finished_went_out_is_published_by_the_sweeper(
    pg_template: str,
) -> None:
    # Given a worker that dies after recording the finish, before publishing it
    with observed(BATON_TEST_FAULT="before_finished") as (cluster, log):
        run = diamond(cluster).insert()
        assert cluster.workers[0].wait(timeout=30) == -9
        assert run.status() == "completed"
        assert log.finished(run.id) == []

        # When a worker with a Sweeper comes up, the missing event goes out, once
        cluster.start_worker(wait=True, **SWEEPER)
        assert_finished_once(cluster, log, run)
        # the Sweeper marks it published right after it went out (publish, then mark)
        wait_for(lambda: cluster.store.get_workflow(run.id).published_at is not None)


def test_a_workflow_whose_steps_all_complete_records_its_finish_with_the_last_step(
    pg_template: str,
) -> None:
    # Given a worker that would die between the last step's completion and a finish
    # recorded in a transaction of its own
    with observed(BATON_TEST_FAULT="before_finish_recorded") as (cluster, log):
        # When every step of a workflow completes
        run = diamond(cluster).insert()

        # Then its finish went in with the last completion: the worker never got there
        assert_finished_once(cluster, log, run)
        assert cluster.workers[0].poll() is None


def test_a_crash_before_the_finish_was_recorded_is_finished_by_the_sweeper(
    pg_template: str,
) -> None:
    # Given a worker that dies after the last step's completion committed (PostgreSQL
    # commits it in one statement), before the workflow's finish was recorded: that
    # happens when a step did not complete, here one the fan-in step tolerates
    with observed(BATON_TEST_FAULT="before_finish_recorded") as (cluster, log):
        a = cluster.actors
        run = (
            baton.Workflow(name="crash")
            .add("fetch_sources", a.echo.message({"documents": [1, 2]}))
            .add("summarize", a.echo.message("summary"), deps=["fetch_sources"])
            .add("keywords", a.boom.message(), deps=["fetch_sources"])
            .add(
                "compile_brief",
                a.tolerant.message(),
                deps=["summarize", "keywords"],
                allow_failed_deps=True,
            )
            .insert()
        )
        assert cluster.workers[0].wait(timeout=30) == -9
        assert states(cluster, run.id) == {
            "fetch_sources": "completed",
            "summarize": "completed",
            "keywords": "discarded",
            "compile_brief": "completed",
        }
        assert run.status() == "running"  # every step settled, the finish unrecorded

        # When a worker with a Sweeper comes up, it records the finish and publishes it
        cluster.start_worker(wait=True, **SWEEPER)
        assert run.wait(timeout=60) == "completed"
        assert run.results()["compile_brief"] == {
            "ok": {"summarize": "summary"},
            "failed": ["keywords"],
        }
        wait_for(lambda: log.finished(run.id), timeout=30)
        [finished] = log.finished(run.id)
        assert finished.payload["failed_steps"] == ["keywords"]
        assert collections.Counter(cluster.runs(run.id)) == {
            "fetch_sources": 1,
            "summarize": 1,
            "keywords": 1,
            "compile_brief": 1,
        }


def test_a_step_whose_message_the_broker_lost_is_rescued(pg_template: str) -> None:
    # Given a step executing on a worker that is killed, and a broker that then loses
    # every message (so nothing will ever be redelivered)
    with observed() as (cluster, log):
        wf = diamond(cluster)
        wf.add("slow", cluster.actors.sleeper.message(1.0), deps=["fetch_sources"])
        run = wf.insert()
        # (its body has begun: the run log says so, not just the claim in the store)
        wait_for(lambda: "slow" in cluster.runs(run.id))
        assert states(cluster, run.id)["slow"] == "executing"
        cluster.workers[0].kill()
        cluster.workers[0].wait()
        client = redis.Redis.from_url(services.REDIS_URL)
        for key in client.scan_iter(match=f"{cluster.namespace}:*"):
            if not key.decode().startswith(f"{cluster.namespace}:runs:"):
                client.delete(key)  # the broker's queues and messages; our run log stays
        client.close()

        # When a worker with a Sweeper starts, it re-enqueues what has no live message
        cluster.start_worker(wait=True, **SWEEPER)
        assert run.wait(timeout=60) == "completed"
        steps = {
            s.step_name: s for s in baton.query.get_workflow_steps(run.id, store=cluster.store)
        }
        assert steps["slow"].attempt == 2
        assert cluster.runs(run.id).count("slow") == 2
        wait_for(lambda: log.finished(run.id), timeout=30)
        assert len(log.finished(run.id)) == 1


def test_two_sweepers_never_overlap_and_never_enqueue_a_step_twice(pg_template: str) -> None:
    # Given 40 steps that are ready but were never enqueued (as after a crash)
    cluster = PostgresCluster(processes=0)
    try:
        wf = baton.Workflow(name="orphans")
        for i in range(40):
            wf.add(f"s{i}", cluster.actors.echo.message(i))
        order = wf.validate(cluster.broker)
        workflow_row, node_rows = wf._rows(order)
        cluster.store.insert_workflow(workflow_row, node_rows)  # written, not enqueued

        # When two workers, each with a Sweeper sweeping every 50 ms, run
        sweeper = {"BATON_TEST_SWEEP_INTERVAL": "0.05", "BATON_TEST_RESCUE_AFTER": "2"}
        cluster.start_worker(**sweeper)
        cluster.start_worker(**sweeper)
        for proc in cluster.workers:
            cluster._await_ready(proc)
        run = baton.WorkflowRun.get(wf.id)
        assert run.wait(timeout=60) == "completed"
        wait_for(lambda: len(cluster.redis.lrange(f"{cluster.namespace}:sweeps", 0, -1)) > 20)

        # Then the sweeps, from both processes, never overlapped in time
        sweeps = [json.loads(s) for s in cluster.redis.lrange(f"{cluster.namespace}:sweeps", 0, -1)]
        assert len({holder for holder, *_ in sweeps}) == 2
        sweeps.sort(key=lambda s: s[1])
        for before, after in zip(sweeps, sweeps[1:], strict=False):
            assert after[1] >= before[2], f"overlap: {before} {after}"
        # and every orphan was enqueued once and ran once
        assert sum(s[3] for s in sweeps) == 40
        assert collections.Counter(cluster.runs(wf.id)) == {f"s{i}": 1 for i in range(40)}
    finally:
        cluster.close()
