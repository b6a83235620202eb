"""Pruning and configuration of the Sweeper, on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

import baton_dramatiq as baton
from tests.support.cluster import Cluster

DAY = dt.timedelta(days=1)


def write_only(c: Cluster, wf: baton.Workflow) -> str:
    """Write a workflow's rows without enqueueing anything (it stays running)."""
    workflow_row, node_rows = wf._rows(wf.validate(c.broker))
    c.store.insert_workflow(workflow_row, node_rows)
    return wf.id


def age(c: Cluster, workflow_id: str, by: dt.timedelta) -> None:
    """Pretend a workflow was inserted, and finished, `by` ago."""
    s = c.store
    w, done = s.workflows, s.completions
    with s.connect() as conn:
        inserted = conn.execute(
            sa.select(w.c.inserted_at).where(w.c.id == workflow_id)
        ).scalar_one()
        conn.execute(sa.update(w).where(w.c.id == workflow_id).values(inserted_at=inserted - by))
        finished = conn.execute(
            sa.select(done.c.finished_at).where(done.c.workflow_id == workflow_id)
        ).scalar()
        if finished is not None:
            conn.execute(
                sa.update(done)
                .where(done.c.workflow_id == workflow_id)
                .values(finished_at=finished - by)
            )


def add_llm_rows(c: Cluster, workflow_id: str, at: dt.datetime) -> None:
    s = c.store
    with s.connect() as conn:
        conn.execute(
            sa.insert(s.step_stats),
            [{"workflow_id": workflow_id, "step_name": "a", "attempt": 1, "model": "m", "at": at}],
        )
        conn.execute(
            sa.insert(s.debug_logs),
            [{"workflow_id": workflow_id, "step_name": "a", "attempt": 1, "model": "m", "at": at}],
        )


def count(c: Cluster, table: sa.Table, workflow_id: str) -> int:
    key = table.c.id if table is c.store.workflows else table.c.workflow_id
    with c.store.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(key == workflow_id)).scalar_one()


def tables(c: Cluster) -> list[sa.Table]:
    s = c.store
    return [s.workflows, s.nodes, s.completions, s.step_stats, s.debug_logs]


def test_pruning_deletes_old_finished_workflows_and_keeps_running_and_recent_ones(
    cluster: Cluster,
) -> None:
    # Given three workflows that finished two days ago, one that just finished,
    # and one still running that was inserted two days ago
    e = cluster.actors.echo
    now = dt.datetime.now(dt.UTC)

    def finished() -> str:
        run = (
            baton.Workflow(name="done")
            .add("a", e.message(1))
            .add("b", e.message(2), deps=["a"])
            .insert()
        )
        assert run.wait(timeout=30) == "completed"
        return run.id

    old = [finished() for _ in range(3)]
    for workflow_id in old:
        age(cluster, workflow_id, 2 * DAY)
        add_llm_rows(cluster, workflow_id, now - 2 * DAY)
    recent = finished()
    add_llm_rows(cluster, recent, now - 2 * DAY)  # an old log of a recent workflow
    running = write_only(cluster, baton.Workflow(name="running").add("a", e.message(1)))
    age(cluster, running, 2 * DAY)
    add_llm_rows(cluster, running, now)

    # When a pruning sweep runs with a one-day retention, in tiny batches
    sweeper = baton.Sweeper(
        cluster.store,
        prune=True,
        max_age=DAY.total_seconds(),
        debug_log_max_age=DAY.total_seconds(),
        batch_size=2,
        rescue_after=3600,
    )
    report = sweeper.sweep_once(cluster.broker)

    # Then every row of the old workflows is gone, from every table
    assert report.ran and report.pruned_workflows == 3
    assert report.pruned_rows == 3 * (2 + 1 + 1)  # nodes, a stats row, a debug log each
    assert report.transactions > 3
    for workflow_id in old:
        assert [count(cluster, t, workflow_id) for t in tables(cluster)] == [0, 0, 0, 0, 0]
    # and the recent and running workflows are untouched, but for the old debug log
    assert [count(cluster, t, recent) for t in tables(cluster)] == [1, 2, 1, 1, 0]
    assert report.pruned_debug_logs == 1
    assert [count(cluster, t, running) for t in tables(cluster)] == [1, 1, 0, 1, 1]
    assert baton.query.get_workflow(running, store=cluster.store).state == "running"


def test_a_large_finished_workflow_is_pruned_in_bounded_transactions(cluster: Cluster) -> None:
    wf = baton.Workflow(name="wide")
    e = cluster.actors.echo
    for i in range(5000):
        wf.add(f"s{i}", e.message(i))
    workflow_id = write_only(cluster, wf)
    with cluster.store.connect() as conn:
        conn.execute(
            sa.insert(cluster.store.completions).values(
                workflow_id=workflow_id,
                outcome="completed",
                failed_steps=[],
                finished_at=dt.datetime.now(dt.UTC) - 2 * DAY,
            )
        )

    report = baton.Sweeper(
        cluster.store, prune=True, max_age=3600, batch_size=500, rescue_after=3600
    ).sweep_once(cluster.broker)

    assert report.pruned_workflows == 1 and report.pruned_rows == 5000
    assert report.transactions >= 10  # 5,000 steps, at most 500 rows per transaction
    assert count(cluster, cluster.store.nodes, workflow_id) == 0


def test_only_one_sweep_runs_at_a_time(cluster: Cluster) -> None:
    sweeper = baton.Sweeper(cluster.store)
    assert cluster.store.acquire_lease("sweeper", "somebody-else", ttl=60)
    assert sweeper.sweep_once(cluster.broker).ran is False
    cluster.store.release_lease("sweeper", "somebody-else")
    assert sweeper.sweep_once(cluster.broker).ran is True


def test_bad_configuration_is_refused_at_construction(cluster: Cluster) -> None:
    s = cluster.store
    for kwargs, message in [
        ({"interval": -1}, "interval must be a number of seconds > 0, got -1"),
        ({"interval": 0}, "interval must be"),
        ({"max_age": 0}, "max_age must be a number of seconds > 0, got 0"),
        ({"rescue_after": -5}, "rescue_after must be"),
        ({"debug_log_max_age": 0}, "debug_log_max_age must be"),
        ({"batch_size": 0}, "batch_size must be a whole number >= 1"),
        ({"intervall": 5}, "Unknown Sweeper option 'intervall'; did you mean 'interval'?"),
    ]:
        with pytest.raises(baton.ConfigurationError, match=message.replace("?", r"\?")):
            baton.Sweeper(s, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(baton.ConfigurationError, match="needs a baton.Store"):
        baton.Sweeper("sqlite://")  # type: ignore[arg-type]
