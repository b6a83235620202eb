"""Step transitions: claim, complete, pause, discard, and what follows downstream.

Every one is a guarded UPDATE (``... WHERE state IN (...) RETURNING ...``), never a read
followed by a write, so concurrent workers cannot both make the same move. A dependent
becomes ready through a counter (``pending_deps``) decremented in the same transaction
that settles its dependency, under the dependent's row lock: the transaction that takes
it to zero, and only that one, makes it ``available``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from .. import faults
from .. import states as S
from .gateway import Claim, Transition, _as_dict, _now, _short
from .lifecycle import Lifecycle
from .tables import UTCDateTime


class Transitions(Lifecycle):
    @functools.cached_property
    def _sql(self) -> _Statements:
        return _Statements(self.nodes, self._change_cols)

    def claim(
        self, workflow_id: str, step_name: str, *, worker_id: str, stale_before: dt.datetime
    ) -> Claim | str:
        """Take a step for execution, or say why not.

        The results of the step's dependencies are read in the same transaction.

        Returns:
          a Claim, or one of ``"not_ready"`` (still pending), ``"finished"`` (terminal),
          ``"busy"`` (another worker holds a live claim), ``"missing"``.
        """
        now = _now()
        if self.driver is not None:
            return self._claim_on_driver(workflow_id, step_name, worker_id, stale_before, now)
        sql = self._sql
        params = {
            "p_wid": workflow_id,
            "p_step": step_name,
            "p_worker": worker_id,
            "p_now": now,
            "p_stale": stale_before,
        }

        def tx(conn: sa.Connection) -> Claim | str:
            row = conn.execute(sql.claim, params).first()
            if row is None:
                return self._why_not(conn.execute(sql.state, params).scalar())
            deps = tuple(row.deps)
            results: dict[str, tuple[str, Any]] = {}
            if deps:
                rows = conn.execute(sql.results, {"p_wid": workflow_id, "p_names": deps})
                results = {r.step_name: (r.state, r.result) for r in rows}
            return self._claimed(row, now, results)

        return self.run(tx)

    def _claim_on_driver(
        self,
        workflow_id: str,
        step_name: str,
        worker_id: str,
        stale_before: dt.datetime,
        now: dt.datetime,
    ) -> Claim | str:
        """PostgreSQL: the claim and its dependencies' results in one round trip."""
        assert self.driver is not None
        params = {
            "wid": workflow_id,
            "step": step_name,
            "worker": worker_id,
            "now": now,
            "stale": stale_before,
        }
        row = self.driver.one(self._hot.claim, params)
        if row is None:
            state = self.driver.one(self._hot.state, params)
            return self._why_not(state[0] if state else None)
        results = {name: (st, res) for name, (st, res) in (row.dep_results or {}).items()}
        return self._claimed(row, now, results)

    def _claimed(self, row: Any, now: dt.datetime, results: dict[str, tuple[str, Any]]) -> Claim:
        return Claim(
            workflow_id=row.workflow_id,
            workflow_name=row.workflow_name,
            step_name=row.step_name,
            actor_name=row.actor_name,
            attempt=row.attempt,
            deps=tuple(row.deps),
            dependents=tuple(row.dependents),
            allow_failed_deps=row.allow_failed_deps,
            change=self._change(row, now),
            results=results,
        )

    @staticmethod
    def _why_not(state: str | None) -> str:
        """Why a step could not be claimed, from the state it is in."""
        if state is None:
            return "missing"
        if state == S.PENDING:
            return "not_ready"
        if state in S.TERMINAL:
            return "finished"
        return "busy"

    def complete(
        self,
        workflow_id: str,
        step_name: str,
        attempt: int,
        result: Any,
        *,
        encoded: str | None = None,
        dependents: Sequence[str] | None = None,
    ) -> Transition:
        """Record a step's result and make ready the dependents it was the last one for.

        A step cancelled or taken over meanwhile is left alone: its result is dropped.

        Parameters:
          encoded(str|None): `result` as JSON already, to spare encoding it again.
          dependents(list[str]|None): the step's dependents, as its claim returned them
            (they never change); PostgreSQL then looks each one up by its key.
        """
        now = _now()
        if self.driver is not None and dependents is not None:
            params = {
                "wid": workflow_id,
                "step": step_name,
                "attempt": attempt,
                "result": encoded if encoded is not None else json.dumps(result),
                "now": now,
                "dependents": list(dependents),
            }
            return self._complete_on_driver(params)
        params = {
            "p_wid": workflow_id,
            "p_step": step_name,
            "p_attempt": attempt,
            "p_result": result,
            "p_now": now,
        }
        return self.run(lambda conn: self._settle(conn, self._sql.complete, params, ok=True))

    def _complete_on_driver(self, params: dict[str, Any]) -> Transition:
        """PostgreSQL: the completion, its dependents' counters and the workflow's count
        in one statement that commits by itself (data-modifying CTEs): one round trip
        instead of five. When the step that settles the workflow's last has no dependents
        and every step completed, that statement records the finish too; otherwise the
        step records it right after, in a transaction of its own, and after a crash in
        between, the Sweeper records it (`finish_orphans`)."""
        assert self.driver is not None
        tr = Transition()
        hot = self._hot
        dependents = params["dependents"]
        if not dependents:
            sql = hot.complete_sink
        elif len(dependents) == 1:
            sql, params = hot.complete_one, dict(params, dependent=dependents[0])
        else:
            sql = hot.complete
        row = self.driver.one(sql, params)
        if row is None:
            return tr  # cancelled or taken over meanwhile: the result is dropped
        now = params["now"]
        tr.changes.append(self._change(row, now))
        tr.ready.extend(row.ready_messages)
        if row.finish_recorded:
            tr.finished = self._finished(row.workflow_id, row.workflow_name, S.COMPLETED, [], now)
        elif row.remaining == 0:
            faults.point("before_finish_recorded")
            params = {"wid": row.workflow_id, "cancelled": row.cancelled, "now": now}
            finish = self.driver.one(self._hot.finish, params)
            if finish is not None:  # else recorded already (by the Sweeper, after a crash)
                tr.finished = self._finished(
                    row.workflow_id, row.workflow_name, finish.outcome, finish.failed_steps, now
                )
        return tr

    def discard(
        self, workflow_id: str, step_name: str, error: str, *, attempt: int | None = None
    ) -> Transition:
        """A step failed for good: discard it and cancel what can no longer run.

        Parameters:
          attempt(int|None): only if the step is still at this attempt.
        """
        now = _now()
        params = {
            "p_wid": workflow_id,
            "p_step": step_name,
            "p_attempt": attempt,
            "p_error": _short(error),
            "p_now": now,
        }
        return self.run(lambda conn: self._settle(conn, self._sql.discard, params, ok=False))

    def retryable(
        self, workflow_id: str, step_name: str, attempt: int, error: str, due_at: dt.datetime
    ) -> Transition:
        """A run failed and Dramatiq will retry it."""
        return self._pause(workflow_id, step_name, attempt, S.RETRYABLE, due_at, _short(error))

    def snooze(
        self, workflow_id: str, step_name: str, attempt: int, due_at: dt.datetime
    ) -> Transition:
        """A step asked to run again at `due_at` without spending a retry."""
        return self._pause(workflow_id, step_name, attempt, S.SNOOZED, due_at, None)

    def heartbeat(self, worker_id: str, steps: Sequence[tuple[str, str]]) -> int:
        """Renew `worker_id`'s claims on `steps` (workflow id, step name); returns how many."""
        n = self.nodes
        stmt = (
            sa.update(n)
            .where(
                sa.tuple_(n.c.workflow_id, n.c.step_name).in_(list(steps)),
                n.c.claimed_by == worker_id,
                n.c.state == S.EXECUTING,
            )
            .values(heartbeat_at=_now())
        )
        return self.run(lambda conn: conn.execute(stmt).rowcount)

    def _pause(
        self,
        workflow_id: str,
        step_name: str,
        attempt: int,
        state: str,
        due_at: dt.datetime,
        error: str | None,
    ) -> Transition:
        now = _now()
        params = {
            "p_wid": workflow_id,
            "p_step": step_name,
            "p_attempt": attempt,
            "p_state": state,
            "p_due": due_at,
            "p_error": error,
        }

        def tx(conn: sa.Connection) -> Transition:
            row = conn.execute(self._sql.pause, params).first()
            return Transition(changes=[self._change(row, now)] if row else [])

        return self.run(tx)

    def _settle(
        self, conn: sa.Connection, stmt: sa.Update, params: dict[str, Any], *, ok: bool
    ) -> Transition:
        """Apply a step's terminal UPDATE, then everything downstream of it."""
        tr = Transition()
        row = conn.execute(stmt, params).first()
        if row is None:
            return tr
        now = params["p_now"]
        tr.changes.append(self._change(row, now))
        terminal = 1 + self._propagate(conn, row.workflow_id, row.dependents, ok, now, tr)
        self._count_terminal(conn, row.workflow_id, terminal, now, tr, completed=int(ok))
        return tr

    def _propagate(
        self,
        conn: sa.Connection,
        workflow_id: str,
        dependents: list[str],
        ok: bool,
        now: dt.datetime,
        tr: Transition,
    ) -> int:
        """Tell the dependents of a step that it settled; returns how many it cancelled.

        A dependent counts a completed dependency off; one that tolerates failures
        (``allow_failed_deps``) counts off any settled dependency; any other is cancelled
        when a dependency did not complete, and so on transitively.
        """
        cancelled = 0
        frontier: list[tuple[list[str], bool]] = [(dependents, ok)]
        while frontier:
            names, dep_ok = frontier.pop()
            if not names:
                continue
            stmt = self._sql.completed_dep if dep_ok else self._sql.failed_dep
            params = {"p_wid": workflow_id, "p_names": sorted(names), "p_now": now}
            for row in conn.execute(stmt, params):
                if row.state == S.AVAILABLE:
                    tr.ready.append(_as_dict(row.ready_message))
                elif row.state == S.CANCELLED:
                    cancelled += 1
                    tr.changes.append(self._change(row, now))
                    frontier.append((row.dependents, False))
        return cancelled


class _Statements:
    """The hot statements, built once per store and bound per call.

    Building a statement and computing its cache key cost about as much CPU as running
    it; a prebuilt statement skips both.
    """

    def __init__(self, n: sa.Table, change_cols: list[sa.Column[Any]]) -> None:
        wid = sa.bindparam("p_wid", type_=sa.String)
        step = sa.bindparam("p_step", type_=sa.String)
        now = sa.bindparam("p_now", type_=UTCDateTime)
        this_step = (n.c.workflow_id == wid, n.c.step_name == step)
        running = (*this_step, n.c.state == S.EXECUTING, n.c.attempt == sa.bindparam("p_attempt"))

        self.claim = (
            sa.update(n)
            .where(
                *this_step,
                sa.or_(
                    n.c.state.in_(S.CLAIMABLE),
                    sa.and_(
                        n.c.state == S.EXECUTING,
                        n.c.heartbeat_at < sa.bindparam("p_stale", type_=UTCDateTime),
                    ),
                ),
            )
            .values(
                state=S.EXECUTING,
                attempt=sa.case((n.c.state == S.SNOOZED, n.c.attempt), else_=n.c.attempt + 1),
                version=n.c.version + 1,
                claimed_by=sa.bindparam("p_worker"),
                heartbeat_at=now,
                started_at=now,
                due_at=None,
                error=None,  # the last attempt's error was published with `retryable`
            )
            .returning(*change_cols, n.c.deps, n.c.dependents, n.c.allow_failed_deps)
        )
        self.state = sa.select(n.c.state).where(*this_step)
        self.results = sa.select(n.c.step_name, n.c.state, n.c.result).where(
            n.c.workflow_id == wid, n.c.step_name.in_(sa.bindparam("p_names", expanding=True))
        )
        self.complete = (
            sa.update(n)
            .where(*running)
            .values(
                state=S.COMPLETED,
                has_result=True,
                result=sa.bindparam("p_result", type_=n.c.result.type),
                version=n.c.version + 1,
                finished_at=now,
                error=None,
                claimed_by=None,
            )
            .returning(*change_cols, n.c.dependents)
        )
        attempt_matches = sa.or_(
            sa.bindparam("p_attempt", type_=sa.Integer).is_(None),
            n.c.attempt == sa.bindparam("p_attempt", type_=sa.Integer),
        )
        self.discard = (
            sa.update(n)
            .where(*this_step, n.c.state.in_(S.TRANSITIONS[S.DISCARDED]), attempt_matches)
            .values(
                state=S.DISCARDED,
                version=n.c.version + 1,
                finished_at=now,
                error=sa.bindparam("p_error"),
                claimed_by=None,
            )
            .returning(*change_cols, n.c.dependents)
        )
        self.pause = (
            sa.update(n)
            .where(*running)
            .values(
                state=sa.bindparam("p_state"),
                version=n.c.version + 1,
                due_at=sa.bindparam("p_due", type_=UTCDateTime),
                error=sa.bindparam("p_error"),
                claimed_by=None,
            )
            .returning(*change_cols)
        )
        self.completed_dep = self._settled_dep(n, change_cols, sa.true())
        self.failed_dep = self._settled_dep(n, change_cols, n.c.allow_failed_deps)

    @staticmethod
    def _settled_dep(
        n: sa.Table, change_cols: list[sa.Column[Any]], counts_off: sa.ColumnElement[bool]
    ) -> sa.Update:
        """A dependency of the named pending steps settled: count it off or cancel them."""
        now = sa.bindparam("p_now", type_=UTCDateTime)
        becomes_ready = sa.and_(counts_off, n.c.pending_deps == 1)
        return (
            sa.update(n)
            .where(
                n.c.workflow_id == sa.bindparam("p_wid"),
                n.c.step_name.in_(sa.bindparam("p_names", expanding=True)),
                n.c.state == S.PENDING,
            )
            .values(
                pending_deps=sa.case((counts_off, n.c.pending_deps - 1), else_=n.c.pending_deps),
                state=sa.case(
                    (becomes_ready, S.AVAILABLE), (counts_off, n.c.state), else_=S.CANCELLED
                ),
                version=sa.case((counts_off, n.c.version), else_=n.c.version + 1),
                finished_at=sa.case((counts_off, n.c.finished_at), else_=now),
                # when it became available: the Sweeper re-enqueues it if still so later
                due_at=sa.case((becomes_ready, now), else_=n.c.due_at),
            )
            .returning(
                *change_cols,
                n.c.dependents,
                sa.case((n.c.state == S.AVAILABLE, n.c.message), else_=sa.null()).label(
                    "ready_message"
                ),
            )
        )
