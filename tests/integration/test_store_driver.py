"""PostgreSQL's hot path (claims, completions, finishes on the driver's own connections)."""

from __future__ import annotations

import datetime as dt
import gc
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from dramatiq import Message

import baton_dramatiq as baton
from baton_dramatiq.store import Claim
from tests.support import services
from tests.support.messages import ready_steps

STALE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
T = TypeVar("T")


@pytest.fixture
def store(pg_url: str) -> Iterator[baton.Store]:
    """A store on PostgreSQL, so with a driver; disposed after the test."""
    store = baton.Store(pg_url)
    assert store.driver is not None
    yield store
    store.dispose()


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


def test_a_connection_the_server_dropped_fails_one_call_and_is_replaced(
    pg_url: str, store: baton.Store
) -> None:
    # Given a store whose hot-path connection is open and idle in its pool
    workflow_id = two_steps(store)
    claim = store.claim(workflow_id, "a", worker_id="w1", stale_before=STALE)
    assert isinstance(claim, Claim)

    # When the server drops every connection to the database
    assert terminate_connections(pg_url.rsplit("/", 1)[1]) >= 1

    # Then the next call fails with a StoreError naming the cause, and the one after
    # runs on a fresh connection
    with pytest.raises(
        baton.StoreError, match="terminating connection|server closed the connection"
    ):
        store.complete(workflow_id, "a", claim.attempt, {"n": 1}, dependents=["b"])
    transition = store.complete(workflow_id, "a", claim.attempt, {"n": 1}, dependents=["b"])
    assert [m["options"]["baton_step"] for m in transition.ready] == [[workflow_id, "b"]]
    steps = {s.step_name: s for s in baton.query.get_workflow_steps(workflow_id, store=store)}
    assert steps["a"].state == "completed" and steps["b"].state == "available"
    assert store.get_results(workflow_id) == {"a": {"n": 1}}


def backend_pid(store: baton.Store) -> int:
    """The server process behind the calling thread's hot-path connection."""
    assert store.driver is not None
    pid: int = store.driver.one("SELECT pg_backend_pid() AS pid", {}).pid
    return pid


def live_backends(pids: list[int], *, settle: float = 5.0) -> list[int]:
    """Which of `pids` the server still runs (waiting out the exit of closed ones)."""
    url = services.db_url("postgres").replace("+psycopg", "")
    deadline = time.monotonic() + settle
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
            ).fetchall()
            if not rows or time.monotonic() > deadline:
                return sorted(pid for (pid,) in rows)
            time.sleep(0.05)


def test_each_thread_keeps_one_connection_and_it_closes_when_the_thread_ends(
    store: baton.Store,
) -> None:
    seen: dict[int, list[int]] = {}

    def work(n: int) -> None:
        seen[n] = [backend_pid(store) for _ in range(3)]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # every thread ran its calls on one connection, and no two threads shared one
    assert all(len(set(pids)) == 1 for pids in seen.values())
    firsts = [pids[0] for pids in seen.values()]
    assert len(set(firsts)) == 3
    # the threads are gone: so are their connections
    gc.collect()
    assert live_backends(firsts) == []
    # and the store still works from this thread
    assert isinstance(two_steps(store), str)


def test_threads_past_the_limit_borrow_pooled_connections(store: baton.Store) -> None:
    store.driver.max_owned = 2
    together = threading.Barrier(5)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                two_steps(store)
        except BaseException as exc:  # reported below
            errors.append(exc)
        together.wait(timeout=10)  # nobody ends before all have run

    threads = [threading.Thread(target=work) for _ in range(5)]
    for thread in threads:
        thread.start()
    owned_while_running = None
    while together.n_waiting < 5 and any(t.is_alive() for t in threads):
        owned_while_running = len(store.driver._owned)
        time.sleep(0.001)
    for thread in threads:
        thread.join()

    assert errors == []
    assert owned_while_running is not None and owned_while_running <= 2
    assert len(baton.query.list_workflows(store=store, limit=100)) == 15


def test_a_forked_child_runs_on_its_own_connection_and_leaves_the_parents_open(
    store: baton.Store,
) -> None:
    parent_pid = backend_pid(store)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: one call on a connection of its own, then exit
        code = 1
        try:
            os.write(write, str(backend_pid(store)).encode())
            gc.collect()  # drops what it inherited
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_pid = int(pipe.read() or 0)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    assert child_pid not in (0, parent_pid)
    # the child's exit did not end the parent's session
    assert backend_pid(store) == parent_pid
    assert live_backends([parent_pid], settle=0) == [parent_pid]


def test_the_hot_path_reports_why_a_step_cannot_be_claimed(store: baton.Store) -> None:
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


def test_the_hot_path_keeps_to_the_stores_schema(pg_template: str) -> None:
    # Given a store whose tables live in their own schema of an unmigrated database
    name = services.create_database(migrated=False)
    store = baton.Store(services.db_url(name), schema="baton_space")
    try:
        baton.migrations.upgrade(store)

        # When a workflow is inserted, claimed, completed and finished on the hot path,
        # through each of its completions: two dependents, one, none
        message = Message(queue_name="default", actor_name="noop", args=(), kwargs={}, options={})
        wf = baton.Workflow(name="schema").add("a", message)
        wf.add("b", message, deps=["a"]).add("c", message, deps=["a"]).add("d", message, deps=["b"])
        store.insert_workflow(*wf._rows(wf.validate()))
        workflow_id = wf.id
        for step, dependents in (("a", ["b", "c"]), ("b", ["d"]), ("c", []), ("d", [])):
            claim = store.claim(workflow_id, step, worker_id="w1", stale_before=STALE)
            assert isinstance(claim, Claim)
            transition = store.complete(
                workflow_id, step, claim.attempt, step, dependents=dependents
            )

        # Then it all happened in that schema, and the public one holds no table
        assert transition.finished is not None
        assert transition.finished["outcome"] == "completed"
        store.mark_published(workflow_id)
        assert store.get_results(workflow_id) == {"a": "a", "b": "b", "c": "c", "d": "d"}
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


def rows_filtered_out(plan: dict[str, Any], table: str) -> int:
    """The most rows any node of an EXPLAIN ANALYZE plan read from `table` and discarded."""
    worst = plan.get("Rows Removed by Filter", 0) if plan.get("Relation Name") == table else 0
    for child in plan.get("Plans", []):
        worst = max(worst, rows_filtered_out(child, table))
    return worst


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
def test_a_steps_claim_and_completion_read_their_rows_by_key_in_a_wide_workflow(
    pg_url: str, store: baton.Store, plan_cache_mode: str
) -> None:
    # Given a fresh database, with no statistics yet, holding a 1 -> 300 -> 1 workflow
    # whose first step is done
    message = Message(queue_name="default", actor_name="noop", args=(), kwargs={}, options={})
    middles = [f"m{i:03}" for i in range(300)]
    wf = baton.Workflow(name="wide").add("src", message)
    for name in middles:
        wf.add(name, message, deps=["src"])
    wf.add("sink", message, deps=middles)
    store.insert_workflow(*wf._rows(wf.validate()))
    claim = store.claim(wf.id, "src", worker_id="w1", stale_before=STALE)
    assert isinstance(claim, Claim)
    store.complete(wf.id, "src", claim.attempt, None, dependents=middles)

    # When two middle steps' claims and completions run, prepared as the driver runs
    # them: one by the statement for a single dependent, one by the one for any number
    now = dt.datetime.now(dt.UTC)
    statements = []
    for step, complete in (("m150", store._hot.complete_one), ("m151", store._hot.complete)):
        claimed = {"wid": wf.id, "step": step, "worker": "w1", "now": now, "stale": STALE}
        completed = {"wid": wf.id, "step": step, "attempt": 1, "result": "1", "now": now}
        completed.update(dependent="sink", dependents=["sink"])
        statements += [(store._hot.claim, claimed), (complete, completed)]
    url = pg_url.replace("+psycopg", "")
    with psycopg.connect(url, autocommit=True, prepare_threshold=0) as conn:
        conn.execute(f"SET plan_cache_mode = {plan_cache_mode}")
        removed = []
        for sql, params in statements:
            explained = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
            plan = explained.fetchone()[0][0]["Plan"]
            removed.append(rows_filtered_out(plan, "workflow_nodes"))
        (sink_waits_on,) = conn.execute(
            "SELECT pending_deps FROM workflow_nodes WHERE workflow_id = %s AND step_name = 'sink'",
            (wf.id,),
        ).fetchone()

    # Then each read the rows it needed by their key, not the workflow's 302 rows
    assert removed == [0, 0, 0, 0]
    steps = {s.step_name: s for s in baton.query.get_workflow_steps(wf.id, store=store)}
    assert steps["m150"].state == steps["m151"].state == "completed"
    assert steps["sink"].state == "pending" and sink_waits_on == 298


def test_the_driver_binds_named_parameters_however_often_and_in_whatever_type_they_come(
    store: baton.Store,
) -> None:
    driver = store.driver
    # a name used twice is one parameter; %% is a literal percent sign
    sql = "SELECT %(a)s::int + %(a)s::int AS twice, %(b)s::text || '%%' AS pct"
    row = driver.one(sql, {"a": 21, "b": "50"})
    assert (row.twice, row.pct) == (42, "50%")
    # the same statement with a NULL, then a number too big for the first one's type
    assert driver.one("SELECT %(n)s::bigint AS n", {"n": None}).n is None
    assert driver.one("SELECT %(n)s::bigint AS n", {"n": 3}).n == 3
    assert driver.one("SELECT %(n)s::bigint AS n", {"n": 2**40}).n == 2**40
    # JSON comes back as Python objects, timestamps as aware datetimes
    now = dt.datetime.now(dt.UTC)
    row = driver.one(
        "SELECT CAST(%(j)s AS jsonb) AS j, %(t)s::timestamptz AS t",
        {"j": '{"k": [1, 2]}', "t": now},
    )
    assert row.j == {"k": [1, 2]} and row.t == now
    # no rows: None; a statement without rows: how many it changed
    assert driver.one("SELECT 1 AS one WHERE false", {}) is None
    assert driver.execute("UPDATE workflows SET remaining = remaining", {}) == 0


def test_statements_past_the_prepared_limit_still_run(store: baton.Store) -> None:
    from baton_dramatiq.store.driver import MAX_PREPARED

    for n in range(MAX_PREPARED + 10):
        row = store.driver.one(f"SELECT %(x)s::int + {n} AS total", {"x": 1})
        assert row.total == n + 1
    prepared = store.driver.one(
        "SELECT count(*) AS n FROM pg_prepared_statements WHERE name LIKE 'baton%%'", {}
    ).n
    assert prepared == MAX_PREPARED


def test_a_failed_statement_raises_a_store_error_and_leaves_the_connection_usable(
    store: baton.Store,
) -> None:
    pid = backend_pid(store)
    with pytest.raises(baton.StoreError, match=r"UndefinedTable: .*no_such_table"):
        store.driver.one("SELECT * FROM no_such_table WHERE x = %(x)s", {"x": 1})
    with pytest.raises(baton.StoreError, match="DivisionByZero"):
        store.driver.one("SELECT 1 / %(zero)s::int AS n", {"zero": 0})
    assert backend_pid(store) == pid
    assert store.driver.one("SELECT 1 / %(one)s::int AS n", {"one": 1}).n == 1


def in_a_transaction(store: baton.Store, call: Callable[[], T]) -> tuple[T, str]:
    """Run `call`, one hot-path statement on this thread's connection, inside a
    transaction, and read the `synchronous_commit` its commit will use."""
    assert store.driver is not None
    store.driver.execute("BEGIN", {})
    try:
        result = call()
        setting = store.driver.one("SELECT current_setting('synchronous_commit') AS v", {}).v
    finally:
        store.driver.execute("COMMIT", {})
    return result, setting


def test_only_the_completions_that_something_follows_wait_for_the_disk(
    store: baton.Store,
) -> None:
    # Given a -> (b, c) -> d, and a second sink e after a
    message = Message(queue_name="default", actor_name="noop", args=(), kwargs={}, options={})
    wf = baton.Workflow(name="commits").add("a", message)
    wf.add("b", message, deps=["a"]).add("c", message, deps=["a"]).add("e", message, deps=["a"])
    wf.add("d", message, deps=["b", "c"])
    store.insert_workflow(*wf._rows(wf.validate()))

    def claim(step: str) -> Claim:
        claim, setting = in_a_transaction(
            store, lambda: store.claim(wf.id, step, worker_id="w1", stale_before=STALE)
        )
        assert isinstance(claim, Claim) and setting == "off"
        return claim

    def complete(step: str) -> tuple[list[str], bool, str]:
        c = claim(step)
        tr, setting = in_a_transaction(
            store, lambda: store.complete(wf.id, step, c.attempt, step, dependents=c.dependents)
        )
        return ready_steps(tr), tr.finished is not None, setting

    # Then a completion that makes steps ready waits for the disk
    assert complete("a") == (["b", "c", "e"], False, "on")
    # a sink that leaves steps to run, and a step its dependent still waits beside, do not
    assert complete("e") == ([], False, "off")
    assert complete("b") == ([], False, "off")
    # the completion their dependent waited for does, and so makes them durable first
    assert complete("c") == (["d"], False, "on")
    # and so does the one that finishes the workflow
    assert complete("d") == ([], True, "on")
    assert store.get_results(wf.id) == {s: s for s in "abcde"}
    # and no setting outlives its transaction
    assert store.driver is not None
    assert store.driver.one("SELECT current_setting('synchronous_commit') AS v", {}).v == "on"


def test_the_claims_commit_without_waiting_for_the_disk_ends_with_the_claim(
    store: baton.Store,
) -> None:
    # Given a step claimed on this thread's connection
    workflow_id = two_steps(store)
    assert store.driver is not None
    claim = store.claim(workflow_id, "a", worker_id="w1", stale_before=STALE)
    assert isinstance(claim, Claim)

    # Then the claim's own setting ended with its transaction: the connection's next
    # statements (a completion among them) commit durably
    setting = "SELECT current_setting('synchronous_commit') AS value"
    assert store.driver.one(setting, {}).value == "on"
    transition = store.complete(workflow_id, "a", claim.attempt, 1, dependents=["b"])
    assert ready_steps(transition) == ["b"]
    assert store.driver.one(setting, {}).value == "on"
