"""A worker killed after the provider answered: the redelivered step does not pay again."""

from __future__ import annotations

import os
import signal

import sqlalchemy as sa

import baton_dramatiq as baton
from baton_dramatiq.llm.testing import FakeProvider
from tests.llm.conftest import actors, with_llm_actors
from tests.support.cluster import PostgresCluster, wait_for


def test_a_worker_killed_after_the_answer_does_not_pay_for_it_again(
    pg_template: str, provider: FakeProvider
) -> None:
    # Given two worker processes (claims go stale after 3 s; Redis redelivers after 4 s),
    # and a step that, on its first attempt, holds on for a long time after its call
    cluster = PostgresCluster(processes=2, threads=2)
    with_llm_actors(cluster)
    try:
        provider.respond("the one answer", prompt_tokens=20, completion_tokens=5)
        message = actors(cluster).chat.message(["question"], provider.url, hold_first=60)
        run = baton.Workflow(name="killed", max_cost_usd=1.0).add("chat", message).insert()

        # When the provider has answered and the worker running the step is killed
        s, n = cluster.store.step_stats, cluster.store.nodes

        def paid_and_claimed() -> str | None:
            with cluster.store.connect() as conn:
                paid = conn.execute(sa.select(s.c.id).where(s.c.workflow_id == run.id)).first()
                owner: str | None = conn.execute(
                    sa.select(n.c.claimed_by).where(n.c.workflow_id == run.id)
                ).scalar()
            return owner if paid else None

        owner = wait_for(paid_and_claimed)
        pid = int(owner.split(":")[1])
        assert pid in [w.pid for w in cluster.workers]
        os.kill(pid, signal.SIGKILL)

        # Then the other worker runs the step again and gets the stored answer, unpaid
        assert run.wait(timeout=60) == "completed"
        assert provider.count() == 1
        assert run.results()["chat"]["texts"] == ["the one answer"]
        assert run.results()["chat"]["cached"] == [True]
        [step] = baton.query.get_workflow_steps(run.id, store=cluster.store)
        assert step.attempt == 2

        # And the stats agree: one paid call on attempt 1, one free replay on attempt 2
        with cluster.store.connect() as conn:
            rows = conn.execute(
                sa.select(s.c.attempt, s.c.cached, s.c.cost_usd).order_by(s.c.id)
            ).all()
        assert [(r.attempt, r.cached) for r in rows] == [(1, False), (2, True)]
        report = baton.stats.workflow_cost(run.id, store=cluster.store)
        assert (report.calls, report.cached_calls) == (1, 1)
        assert report.total_cost_usd == rows[0].cost_usd > 0
        w = cluster.store.workflows
        with cluster.store.connect() as conn:
            spent, held = conn.execute(
                sa.select(w.c.llm_spent_usd, w.c.llm_reserved_usd).where(w.c.id == run.id)
            ).one()
        assert (spent, held) == (report.total_cost_usd, 0.0)
    finally:
        cluster.close()
