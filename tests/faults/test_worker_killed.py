"""A worker process killed in the middle of a step: the workflow still finishes, once."""

from __future__ import annotations

import collections
import os
import signal

import sqlalchemy as sa

import baton_dramatiq as baton
from tests.support.cluster import PostgresCluster, wait_for


def test_a_step_whose_worker_is_killed_runs_again_and_the_workflow_finishes_once(
    pg_template: str,
) -> None:
    # Given two worker processes (claims go stale after 3 s; Redis redelivers after 4 s)
    cluster = PostgresCluster(processes=2, threads=2)
    try:
        a = cluster.actors
        wf = (
            baton.Workflow(name="survivor")
            .add("slow", a.sleeper.message(2.0))
            .add("after", a.record_deps.message(), deps=["slow"])
        )
        finished = baton.events.subscribe_workflow(wf.id, timeout=60)
        run = wf.insert()

        # When the process running 'slow' is killed with SIGKILL mid-step
        def claimant() -> str | None:
            n = cluster.store.nodes
            with cluster.store.connect() as conn:
                return conn.execute(
                    sa.select(n.c.claimed_by).where(
                        n.c.workflow_id == run.id, n.c.step_name == "slow", n.c.state == "executing"
                    )
                ).scalar()

        wait_for(lambda: "slow" in cluster.runs(run.id))  # its body is running
        owner = wait_for(claimant)
        pid = int(owner.split(":")[1])
        assert pid in [w.pid for w in cluster.workers]
        os.kill(pid, signal.SIGKILL)

        # Then the surviving worker takes the step over and the workflow completes
        assert run.wait(timeout=60) == "completed"
        assert run.results()["after"] == {"step": "after", "saw": ["slow"]}
        steps = {
            s.step_name: s for s in baton.query.get_workflow_steps(run.id, store=cluster.store)
        }
        assert steps["slow"].attempt == 2 and steps["after"].attempt == 1
        assert collections.Counter(cluster.runs(run.id)) == {"slow": 2, "after": 1}
        events = list(finished)
        assert sum(e.event == "workflow_finished" for e in events) == 1
        slow_states = [e.payload["state"] for e in events if e.payload.get("step_name") == "slow"]
        assert slow_states == ["executing", "executing", "completed"]
    finally:
        cluster.close()


def test_a_live_step_longer_than_the_claim_timeout_keeps_its_claim(pg_template: str) -> None:
    # Given a step that runs for longer than the 3 s claim timeout
    cluster = PostgresCluster(processes=2, threads=2)
    try:
        a = cluster.actors
        wf = baton.Workflow(name="long").add("long", a.sleeper.message(4.5))
        run = wf.insert()
        wait_for(lambda: cluster.runs(run.id) == ["long"])

        # When a duplicate of its message arrives after the claim timeout
        import time

        time.sleep(3.5)
        message = wf.steps[0].message.copy(options={"baton_step": [wf.id, "long"]})
        cluster.broker.enqueue(message)

        # Then the duplicate is dropped: the running worker renewed its claim
        assert run.wait(timeout=30) == "completed"
        assert cluster.runs(run.id) == ["long"]
        [step] = baton.query.get_workflow_steps(run.id, store=cluster.store)
        assert step.attempt == 1 and step.version == 2
    finally:
        cluster.close()
