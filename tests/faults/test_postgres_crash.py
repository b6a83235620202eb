"""PostgreSQL itself crashing: a claim or a completion that did not wait for the disk may
be lost, and only one that nothing has followed from yet."""

from __future__ import annotations

import datetime as dt
import os
import signal
from collections.abc import Iterator

import pytest
from dramatiq import Message

import baton_dramatiq as baton
from baton_dramatiq.store import Claim, Transition
from tests.support.messages import ready_steps
from tests.support.private_postgres import PrivatePostgres

DATABASE = "baton"
STALE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def server() -> Iterator[PrivatePostgres]:
    """A migrated database on a PostgreSQL server of this test's own."""
    server = PrivatePostgres()
    try:
        server.start()
        server.create_database(DATABASE)
        store = baton.Store(server.url(DATABASE))
        baton.migrations.upgrade(store)
        store.dispose()
        yield server
    finally:
        server.close()


def run_step(store: baton.Store, workflow_id: str, step: str) -> Transition:
    """Claim `step` and complete it with its own name as its result, as a worker would."""
    claim = store.claim(workflow_id, step, worker_id="w1", stale_before=STALE)
    assert isinstance(claim, Claim), f"{step} could not be claimed: {claim}"
    return store.complete(workflow_id, step, claim.attempt, step, dependents=claim.dependents)


def states(store: baton.Store, workflow_id: str) -> dict[str, str]:
    steps = baton.query.get_workflow_steps(workflow_id, store=store)
    return {s.step_name: s.state for s in steps}


def hold_async_commits_in_memory(server: PrivatePostgres) -> None:
    """Stop the server's WAL writer: a commit that does not wait for the disk then stays
    in the server's memory (as it may stay in the machine's until its disk has it) until
    a commit that waits flushes the WAL, or the crash loses it."""
    os.kill(server.pids()["walwriter"], signal.SIGSTOP)


def crash_and_restart(server: PrivatePostgres, store: baton.Store) -> baton.Store:
    server.kill()
    store.dispose()
    server.start()
    return baton.Store(server.url(DATABASE))


def test_a_crash_of_postgresql_takes_back_only_what_nothing_followed_from(
    server: PrivatePostgres,
) -> None:
    # Given a -> (b, c) -> d, with a completed (which made b and c ready)
    message = Message(queue_name="default", actor_name="noop", args=(), kwargs={}, options={})
    wf = baton.Workflow(name="crash").add("a", message)
    wf.add("b", message, deps=["a"]).add("c", message, deps=["a"])
    wf.add("d", message, deps=["b", "c"])
    store = baton.Store(server.url(DATABASE))
    store.insert_workflow(*wf._rows(wf.validate()))
    assert ready_steps(run_step(store, wf.id, "a")) == ["b", "c"]
    hold_async_commits_in_memory(server)

    # When b runs (d still waits for c), and PostgreSQL crashes
    assert not run_step(store, wf.id, "b").ready
    store = crash_and_restart(server, store)

    # Then b's claim and completion are gone: b is to run again. What a's completion
    # made ready, it waited for the disk for, and that is all still there.
    assert states(store, wf.id) == {
        "a": "completed",
        "b": "available",
        "c": "available",
        "d": "pending",
    }

    # When b runs again, then c, whose completion makes d ready, and PostgreSQL crashes
    hold_async_commits_in_memory(server)
    assert not run_step(store, wf.id, "b").ready
    assert ready_steps(run_step(store, wf.id, "c")) == ["d"]
    store = crash_and_restart(server, store)

    # Then both are there: c's completion waited for the disk, and that took b's first
    assert states(store, wf.id) == {
        "a": "completed",
        "b": "completed",
        "c": "completed",
        "d": "available",
    }
    # and so did the workflow's count of steps left: d's completion finishes it
    try:
        finished = run_step(store, wf.id, "d").finished
        assert finished is not None and finished["outcome"] == "completed"
        assert store.get_results(wf.id) == {"a": "a", "b": "b", "c": "c", "d": "d"}
    finally:
        store.dispose()
