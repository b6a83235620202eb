"""PostgreSQL's hot path: what every step and every workflow does, straight on the driver.

A workflow's insert, a step's claim and completion, a workflow's finish and its
publication mark: each is one statement that commits by itself, on psycopg connections
kept in autocommit (made like the engine's). psycopg prepares them after a few runs and
hands rows back as named tuples, so a step pays for two round trips and little else:
building, compiling and caching these statements through SQLAlchemy cost the worker as
much CPU as PostgreSQL spent running them. Everything else goes through SQLAlchemy.

Each thread that runs them keeps a connection of its own (up to the engine's pool
size; threads past that borrow from a pool): with eight worker threads on one GIL, a
checkout and return through a shared pool's locks cost more than the statement's own
Python work.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.rows import namedtuple_row

from .. import states as S
from ..errors import StoreError

#: SQLSTATEs worth running a statement again for: deadlock, serialization failure
RETRY_SQLSTATES = frozenset({"40P01", "40001"})
#: how many times a statement or transaction is tried before its error is raised
RETRIES = 8


def pause_before_retry(attempt: int) -> None:
    """Back off after failed attempt number `attempt` (0-based): 2 ms, doubling."""
    time.sleep(0.002 * (2**attempt))


def store_error(driver_error: BaseException) -> StoreError:
    """A StoreError naming the driver's error class and message."""
    return StoreError(f"{type(driver_error).__name__}: {driver_error}".strip())


class Driver:
    """Runs one autocommit statement at a time on the calling thread's own psycopg
    connection (or, past `max_owned` threads, on one borrowed from a pool)."""

    def __init__(self, engine: sa.Engine, *, max_owned: int | None = None) -> None:
        self._engine = engine
        size = getattr(engine.pool, "size", None)
        #: how many threads may keep a connection of their own
        self.max_owned = max_owned if max_owned is not None else (size() if size else 10)
        self._reset()
        ref = weakref.ref(self)

        def in_child() -> None:  # connections never cross a fork: a child makes its own
            driver = ref()
            if driver is not None:
                driver._reset()

        os.register_at_fork(after_in_child=in_child)

    def _reset(self) -> None:
        self._pool: Any = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._owned: weakref.WeakSet[_Owned] = weakref.WeakSet()

    def _current_pool(self) -> Any:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    pool = self._engine.pool.recreate()
                    sa.event.listen(pool, "connect", _autocommit)
                    self._pool = pool
        return self._pool

    def one(self, sql: str, params: dict[str, Any]) -> Any:
        """The first row `sql` returns (a named tuple), or None; retried on deadlock."""
        return self._run(sql, params, fetch=True)

    def execute(self, sql: str, params: dict[str, Any]) -> int:
        """Run `sql`, which returns no rows; how many rows it changed."""
        rowcount: int = self._run(sql, params, fetch=False)
        return rowcount

    def _run(self, sql: str, params: dict[str, Any], *, fetch: bool) -> Any:
        for attempt in range(RETRIES):
            try:
                cur, borrowed = self._checkout()
            except psycopg.Error as exc:
                raise store_error(exc) from exc
            try:
                cur.execute(sql, params)
                return cur.fetchone() if fetch else cur.rowcount
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.OperationalError) or cur.connection.closed:
                    # a broken connection: the next call gets a fresh one
                    if borrowed is not None:
                        borrowed.invalidate(exc)
                    else:
                        cur.connection.close()
                if exc.sqlstate not in RETRY_SQLSTATES or attempt == RETRIES - 1:
                    raise store_error(exc) from exc
            finally:
                if borrowed is not None:
                    cur.close()
                    borrowed.close()
            pause_before_retry(attempt)
        raise AssertionError("unreachable")

    def _checkout(self) -> tuple[psycopg.Cursor[Any], Any]:
        """This thread's cursor, and None; or, past `max_owned` threads, a cursor on a
        pooled connection and its pool handle, both to be closed after the statement.

        A thread reuses one cursor: with eight threads on one GIL, making and closing
        a cursor per statement cost about as much CPU as the rest of the statement."""
        owned: _Owned | None = getattr(self._local, "owned", None)
        if owned is not None:
            if not owned.conn.closed:
                return owned.cursor, None
            with self._lock:
                self._owned.discard(owned)  # broken: it no longer counts
            self._local.owned = None
        fairy = self._current_pool().connect()
        conn: psycopg.Connection[Any] = fairy.driver_connection
        with self._lock:
            if len(self._owned) >= self.max_owned:
                return conn.cursor(row_factory=namedtuple_row), fairy
            fairy.detach()  # the pool forgets it: it is this thread's until the thread ends
            owned = _Owned(conn)
            self._owned.add(owned)
        self._local.owned = owned
        return owned.cursor, None

    def dispose(self) -> None:
        """Close every thread's connection and the pool (threads reconnect on next use)."""
        with self._lock:
            pool, self._pool = self._pool, None
            owned = list(self._owned)
        for each in owned:
            each.close()
        if pool is not None:
            pool.dispose()


class _Owned:
    """One thread's connection: closed when the thread ends and its locals go (but
    never by a forked child, which shares the parent's socket and must leave it be)."""

    __slots__ = ("__weakref__", "conn", "cursor", "pid")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn, self.pid = conn, os.getpid()
        self.cursor = conn.cursor(row_factory=namedtuple_row)

    def close(self) -> None:
        if self.pid == os.getpid() and not self.conn.closed:
            self.conn.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit, or a connection already gone
            pass


def _autocommit(dbapi_conn: psycopg.Connection[Any], _record: Any) -> None:
    dbapi_conn.autocommit = True


#: the per-step columns that `HotStatements.insert` reads from its JSON, with their types
NODE_COLUMNS = {
    "step_name": "text",
    "position": "int",
    "state": "text",
    "actor_name": "text",
    "message": "jsonb",
    "deps": "jsonb",
    "dependents": "jsonb",
    "pending_deps": "int",
    "allow_failed_deps": "boolean",
}
NODE_JSON_KEYS = tuple(NODE_COLUMNS)


class HotStatements:
    """The hot path's statements as psycopg SQL, for one store's tables: the claim, the
    completion, the insert of a workflow, its finish and its publication mark."""

    def __init__(
        self, nodes: str, workflows: str, completions: str, change_cols: tuple[str, ...]
    ) -> None:
        self._workflows = workflows
        returned = ", ".join(change_cols)
        claimable = ", ".join(f"'{state}'" for state in S.CLAIMABLE)
        #: the claim, with its dependencies' results ({name: [state, result]})
        self.claim = f"""
            WITH claimed AS (
                UPDATE {nodes}
                   SET state = '{S.EXECUTING}',
                       attempt = CASE WHEN state = '{S.SNOOZED}' THEN attempt
                                      ELSE attempt + 1 END,
                       version = version + 1, claimed_by = %(worker)s,
                       heartbeat_at = %(now)s, started_at = %(now)s,
                       due_at = NULL, error = NULL
                 WHERE workflow_id = %(wid)s AND step_name = %(step)s
                   AND (state IN ({claimable})
                        OR (state = '{S.EXECUTING}' AND heartbeat_at < %(stale)s))
             RETURNING {returned}, deps, dependents, allow_failed_deps
            )
            SELECT claimed.*,
                   (SELECT jsonb_object_agg(
                               dep.name,
                               -- one primary-key lookup per dependency, whatever the
                               -- planner believes of the table: a step's workflow may
                               -- hold 50,000 rows, and a filter over them would run for
                               -- every claim
                               (SELECT jsonb_build_array(n.state, n.result)
                                  FROM {nodes} AS n
                                 WHERE n.workflow_id = %(wid)s AND n.step_name = dep.name))
                      FROM jsonb_array_elements_text(claimed.deps) AS dep(name)
                   ) AS dep_results
              FROM claimed
        """
        self.state = (
            f"SELECT state FROM {nodes} WHERE workflow_id = %(wid)s AND step_name = %(step)s"
        )
        #: the completion, its dependents' counters and the workflow's count of steps left
        self.complete = f"""
            WITH done AS (
                UPDATE {nodes}
                   SET state = '{S.COMPLETED}', has_result = true,
                       result = CAST(%(result)s AS jsonb), version = version + 1,
                       finished_at = %(now)s, error = NULL, claimed_by = NULL
                 WHERE workflow_id = %(wid)s AND step_name = %(step)s
                   -- `IS TRUE` keeps the state index out of the plan, here and below:
                   -- each row is one primary-key lookup, never a walk over every
                   -- executing (or pending) step's entry in the state index
                   AND (state = '{S.EXECUTING}') IS TRUE AND attempt = %(attempt)s
             RETURNING {returned}
            ), ready AS (
                UPDATE {nodes} AS d
                   SET pending_deps = d.pending_deps - 1,
                       state = CASE WHEN d.pending_deps = 1 THEN '{S.AVAILABLE}'
                                    ELSE d.state END,
                       due_at = CASE WHEN d.pending_deps = 1 THEN %(now)s ELSE d.due_at END
                 WHERE d.workflow_id = %(wid)s AND d.step_name = ANY(%(dependents)s)
                   -- bounds on the key's second column: without statistics the planner
                   -- leaves `= ANY` as a filter over all the workflow's steps, but
                   -- bounds always narrow the index scan (to one key for one dependent)
                   AND d.step_name BETWEEN (SELECT min(name) FROM unnest(%(dependents)s) AS name)
                                       AND (SELECT max(name) FROM unnest(%(dependents)s) AS name)
                   AND (d.state = '{S.PENDING}') IS TRUE AND EXISTS (SELECT FROM done)
             RETURNING d.state, d.message
            ), counted AS (
                UPDATE {workflows} AS w SET remaining = w.remaining - 1
                 WHERE w.id = %(wid)s AND EXISTS (SELECT FROM done)
             RETURNING w.remaining, w.cancelled
            )
            SELECT done.*, counted.remaining, counted.cancelled,
                   (SELECT coalesce(jsonb_agg(ready.message), '[]'::jsonb)
                      FROM ready WHERE ready.state = '{S.AVAILABLE}') AS ready_messages
              FROM done, counted
        """
        #: the finish of a workflow whose last step just settled, recorded exactly once
        self.finish = f"""
            WITH verdict AS (
                SELECT coalesce(jsonb_agg(step_name ORDER BY position)
                                    FILTER (WHERE state = '{S.DISCARDED}'),
                                '[]'::jsonb) AS failed_steps,
                       CASE WHEN %(cancelled)s THEN '{S.CANCELLED}'
                            -- a sink that did not complete
                            WHEN bool_or(dependents = '[]'::jsonb) THEN 'failed'
                            ELSE '{S.COMPLETED}' END AS outcome
                  FROM {nodes}
                 WHERE workflow_id = %(wid)s AND state <> '{S.COMPLETED}'
            )
            INSERT INTO {completions} (workflow_id, outcome, failed_steps, finished_at)
            SELECT %(wid)s, outcome, failed_steps, %(now)s FROM verdict
            ON CONFLICT DO NOTHING
            RETURNING outcome, failed_steps
        """
        columns = ", ".join(NODE_COLUMNS)
        typed = ", ".join(f"{name} {kind}" for name, kind in NODE_COLUMNS.items())
        #: every step of a new workflow, in the statement that inserts the workflow
        self._insert_nodes = f"""
            INSERT INTO {nodes} (workflow_id, workflow_name, inserted_at, due_at, {columns})
            SELECT %(id)s, %(name)s, %(p_now)s,
                   CASE WHEN r.state = '{S.AVAILABLE}' THEN %(p_now)s END, {columns}
              FROM jsonb_to_recordset(%(p_nodes)s) AS r({typed})
        """
        self.mark_published = (
            f"UPDATE {completions} SET published_at = %(now)s WHERE workflow_id = %(wid)s"
        )

    def insert(self, workflow: dict[str, Any]) -> str:
        """A new workflow (`workflow`'s columns) and its steps, in one statement."""
        columns = ", ".join(workflow)
        values = ", ".join(f"%({name})s" for name in workflow)
        return (
            f"WITH workflow AS (INSERT INTO {self._workflows} ({columns}) VALUES ({values}))"
            + self._insert_nodes
        )
