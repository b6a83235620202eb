"""PostgreSQL's hot path (claims, completions, finishes on the driver's own pool)."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from dramatiq import Message

import baton_dramatiq as baton
from baton_dramatiq.store import Claim
from tests.support import services

STALE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def two_steps(store: baton.Store) -> str:
    """A workflow a -> b written straight to the store (nothing enqueued)."""
    message = Message(queue_name="default", actor_name="noop", args=(), kwargs={}, options={})
    wf = baton.Workflow(name="pair").add("a", message).add("b", message, deps=["a"])
    store.insert_workflow(*wf._rows(wf.validate()))
    return wf.id


def terminate_connections(database: str) -> int:
    with psycopg.connect(services.db_url(database).replace("+psycopg", ""), autocommit=True) as c:
        rows = c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)


def test_a_connection_the_server_dropped_fails_one_call_and_is_replaced(pg_url: str) -> None:
    # Given a store whose hot-path connection is open and idle in its pool
    store = baton.Store(pg_url)
    try:
        workflow_id = two_steps(store)
        claim = store.claim(workflow_id, "a", worker_id="w1", stale_before=STALE)
        assert isinstance(claim, Claim)

        # When the server drops every connection to the database
        assert terminate_connections(pg_url.rsplit("/", 1)[1]) >= 1

        # Then the next call fails with a StoreError naming the cause, and the one after
        # runs on a fresh connection
        with pytest.raises(baton.StoreError, match="terminating connection"):
            store.complete(workflow_id, "a", claim.attempt, {"n": 1}, dependents=["b"])
        transition = store.complete(workflow_id, "a", claim.attempt, {"n": 1}, dependents=["b"])
        assert [m["options"]["baton_step"] for m in transition.ready] == [[workflow_id, "b"]]
        steps = {s.step_name: s for s in baton.query.get_workflow_steps(workflow_id, store=store)}
        assert steps["a"].state == "completed" and steps["b"].state == "available"
        assert store.get_results(workflow_id) == {"a": {"n": 1}}
    finally:
        store.dispose()


def test_the_hot_path_reports_why_a_step_cannot_be_claimed(pg_url: str) -> None:
    store = baton.Store(pg_url)
    try:
        workflow_id = two_steps(store)
        assert store.claim(workflow_id, "b", worker_id="w1", stale_before=STALE) == "not_ready"
        assert store.claim("nope", "a", worker_id="w1", stale_before=STALE) == "missing"
        claim = store.claim(workflow_id, "a", worker_id="w1", stale_before=STALE)
        assert isinstance(claim, Claim)
        fresh = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
        assert store.claim(workflow_id, "a", worker_id="w2", stale_before=fresh) == "busy"
        store.complete(workflow_id, "a", claim.attempt, None, dependents=["b"])
        assert store.claim(workflow_id, "a", worker_id="w2", stale_before=STALE) == "finished"
        # b's claim carries a's result, read in the same statement
        b = store.claim(workflow_id, "b", worker_id="w1", stale_before=STALE)
        assert isinstance(b, Claim)
        assert b.results == {"a": ("completed", None)} and b.deps == ("a",)
    finally:
        store.dispose()


def test_the_hot_path_keeps_to_the_stores_schema(pg_template: str) -> None:
    # Given a store whose tables live in their own schema of an unmigrated database
    name = services.create_database(migrated=False)
    store = baton.Store(services.db_url(name), schema="baton_space")
    try:
        baton.migrations.upgrade(store)

        # When a workflow is inserted, claimed, completed and finished on the hot path
        workflow_id = two_steps(store)
        for step, dependents in (("a", ["b"]), ("b", [])):
            claim = store.claim(workflow_id, step, worker_id="w1", stale_before=STALE)
            assert isinstance(claim, Claim)
            transition = store.complete(
                workflow_id, step, claim.attempt, step, dependents=dependents
            )

        # Then it all happened in that schema, and the public one holds no table
        assert transition.finished is not None
        assert transition.finished["outcome"] == "completed"
        store.mark_published(workflow_id)
        assert store.get_results(workflow_id) == {"a": "a", "b": "b"}
        with psycopg.connect(services.db_url(name).replace("+psycopg", "")) as conn:
            tables = conn.execute(
                "SELECT table_schema, count(*) FROM information_schema.tables"
                " WHERE table_name LIKE 'workflow%%' GROUP BY 1"
            ).fetchall()
            published = conn.execute(
                "SELECT published_at IS NOT NULL FROM baton_space.workflow_completions"
            ).fetchall()
        assert [schema for schema, _ in tables] == ["baton_space"]
        assert published == [(True,)]
    finally:
        store.dispose()
        services.drop_database(name)
