"""The migrations after the first, on a database that already holds workflows."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

import baton_dramatiq as baton

ADDED = {
    "workflows": {"llm_spent_usd", "llm_reserved_usd"},
    "workflow_nodes": {"llm_spent_usd", "llm_reserved_usd"},
    "workflow_step_stats": {"call_key", "response"},
    "workflow_debug_logs": {"position", "latency_ms", "truncated"},
}


#: SQLite and PostgreSQL, not a schema of its own: the raw SQL below names tables unqualified
ON_EACH_BACKEND = pytest.mark.parametrize("empty_store", ["sqlite", "postgresql"], indirect=True)


def columns(store: baton.Store, table: str) -> set[str]:
    with store.connect() as conn:
        return {c["name"] for c in sa.inspect(conn).get_columns(table)}


@ON_EACH_BACKEND
def test_0002_adds_the_llm_columns_to_existing_rows_and_its_downgrade_removes_only_them(
    empty_store: baton.Store,
) -> None:
    store = empty_store
    # Given a database at 0001 holding a workflow
    baton.migrations.upgrade(store, "0001")
    before = {table: columns(store, table) for table in ADDED}
    with store.connect() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO workflows (id, name, total_steps, remaining, cancelled, inserted_at) "
                "VALUES ('w1', 'old', 1, 1, false, :now)"
            ),
            {"now": dt.datetime(2024, 1, 1)},
        )

    # When it is upgraded, the workflow gets an empty LLM ledger
    baton.migrations.upgrade(store, "0002")
    assert baton.migrations.current(store) == "0002"
    for table, added in ADDED.items():
        assert columns(store, table) == before[table] | added
    w = store.workflows
    with store.connect() as conn:
        ledger = conn.execute(sa.select(w.c.llm_spent_usd, w.c.llm_reserved_usd)).one()
    assert tuple(ledger) == (0.0, 0.0)

    # And a downgrade to 0001 removes exactly what 0002 added, keeping the data
    baton.migrations.downgrade(store, "0001")
    assert baton.migrations.current(store) == "0001"
    assert {table: columns(store, table) for table in ADDED} == before
    with store.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM workflows")).scalar() == "old"


@ON_EACH_BACKEND
def test_0003_counts_each_workflows_steps_that_did_not_complete_and_its_downgrade_drops_it(
    empty_store: baton.Store,
) -> None:
    store = empty_store
    # Given a database at 0002 holding a workflow with a step of each terminal state
    # (and one still pending) and a workflow with none settled
    baton.migrations.upgrade(store, "0002")
    before = columns(store, "workflows")
    now = dt.datetime(2024, 1, 1)
    with store.connect() as conn:
        for wid, remaining in (("w1", 1), ("w2", 2)):
            conn.execute(
                sa.text(
                    "INSERT INTO workflows (id, name, total_steps, remaining, cancelled, "
                    "inserted_at) VALUES (:wid, 'old', 4, :remaining, false, :now)"
                ),
                {"wid": wid, "remaining": remaining, "now": now},
            )
        steps = [("w1", "a", "completed"), ("w1", "b", "discarded"), ("w1", "c", "cancelled")]
        steps += [("w1", "d", "pending"), ("w2", "a", "pending"), ("w2", "b", "available")]
        for position, (wid, name, state) in enumerate(steps):
            conn.execute(
                sa.text(
                    "INSERT INTO workflow_nodes (workflow_id, workflow_name, step_name, "
                    "position, actor_name, state, message, deps, dependents, pending_deps, "
                    "allow_failed_deps, inserted_at) VALUES (:wid, 'old', :name, :position, "
                    "'noop', :state, '{}', '[]', '[]', 0, false, :now)"
                ),
                {"wid": wid, "name": name, "position": position, "state": state, "now": now},
            )

    # When it is upgraded, each workflow counts its discarded and cancelled steps
    baton.migrations.upgrade(store)
    assert baton.migrations.current(store) == "0003"
    w = store.workflows
    with store.connect() as conn:
        counts = dict(conn.execute(sa.select(w.c.id, w.c.not_completed)).all())
    assert counts == {"w1": 2, "w2": 0}

    # And a downgrade to 0002 drops the count, keeping the workflows
    baton.migrations.downgrade(store, "0002")
    assert columns(store, "workflows") == before
    with store.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM workflow_nodes")).scalar() == 6
