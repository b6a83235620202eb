"""Step transitions: claim, complete, pause, discard, and what follows downstream.

Every one is a guarded UPDATE (``... WHERE state IN (...) RETURNING ...``), never a read
followed by a write, so concurrent workers cannot both make the same move. A dependent
becomes ready through a counter (``pending_deps``) decremented in the same transaction
that settles its dependency, under the dependent's row lock: the transaction that takes
it to zero, and only that one, makes it ``available``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from .. import states as S
from .gateway import Claim, Transition, _as_dict, _now, _short
from .lifecycle import Lifecycle
from .tables import UTCDateTime


class Transitions(Lifecycle):
    def claim(
        self, workflow_id: str, step_name: str, *, worker_id: str, stale_before: dt.datetime
    ) -> Claim | str:
        """Take a step for execution, or say why not.

        Returns:
          a Claim, or one of ``"not_ready"`` (still pending), ``"finished"`` (terminal),
          ``"busy"`` (another worker holds a live claim), ``"missing"``.
        """
        n = self.nodes
        now = _now()
        stmt = (
            sa.update(n)
            .where(
                n.c.workflow_id == workflow_id,
                n.c.step_name == step_name,
                sa.or_(
                    n.c.state.in_(S.CLAIMABLE),
                    sa.and_(n.c.state == S.EXECUTING, n.c.heartbeat_at < stale_before),
                ),
            )
            .values(
                state=S.EXECUTING,
                attempt=sa.case((n.c.state == S.SNOOZED, n.c.attempt), else_=n.c.attempt + 1),
                version=n.c.version + 1,
                claimed_by=worker_id,
                heartbeat_at=now,
                started_at=now,
                due_at=None,
                error=None,  # the last attempt's error was published with `retryable`
            )
            .returning(*self._change_cols, n.c.deps, n.c.allow_failed_deps)
        )

        def tx(conn: sa.Connection) -> Claim | str:
            row = conn.execute(stmt).first()
            if row is not None:
                change = self._change(row, now)
                return Claim(
                    workflow_id=workflow_id,
                    workflow_name=row.workflow_name,
                    step_name=step_name,
                    actor_name=row.actor_name,
                    attempt=row.attempt,
                    deps=tuple(row.deps),
                    allow_failed_deps=row.allow_failed_deps,
                    change=change,
                )
            state = conn.execute(
                sa.select(n.c.state).where(
                    n.c.workflow_id == workflow_id, n.c.step_name == step_name
                )
            ).scalar()
            if state is None:
                return "missing"
            if state == S.PENDING:
                return "not_ready"
            if state in S.TERMINAL:
                return "finished"
            return "busy"

        return self.run(tx)

    def complete(self, workflow_id: str, step_name: str, attempt: int, result: Any) -> Transition:
        """Record a step's result and make ready the dependents it was the last one for.

        A step cancelled or taken over meanwhile is left alone: its result is dropped.
        """
        n = self.nodes
        now = _now()
        stmt = (
            sa.update(n)
            .where(*self._running(workflow_id, step_name, attempt))
            .values(
                state=S.COMPLETED,
                has_result=True,
                result=sa.JSON.NULL if result is None else result,
                version=n.c.version + 1,
                finished_at=now,
                error=None,
                claimed_by=None,
            )
            .returning(*self._change_cols, n.c.dependents)
        )
        return self.run(lambda conn: self._settle(conn, stmt, now, ok=True))

    def discard(
        self, workflow_id: str, step_name: str, error: str, *, attempt: int | None = None
    ) -> Transition:
        """A step failed for good: discard it and cancel what can no longer run."""
        n = self.nodes
        now = _now()
        where = [
            n.c.workflow_id == workflow_id,
            n.c.step_name == step_name,
            n.c.state.in_(S.TRANSITIONS[S.DISCARDED]),
        ]
        if attempt is not None:
            where.append(n.c.attempt == attempt)
        stmt = (
            sa.update(n)
            .where(*where)
            .values(
                state=S.DISCARDED,
                version=n.c.version + 1,
                finished_at=now,
                error=_short(error),
                claimed_by=None,
            )
            .returning(*self._change_cols, n.c.dependents)
        )
        return self.run(lambda conn: self._settle(conn, stmt, now, ok=False))

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

    def _running(self, workflow_id: str, step_name: str, attempt: int) -> list[Any]:
        n = self.nodes
        return [
            n.c.workflow_id == workflow_id,
            n.c.step_name == step_name,
            n.c.state == S.EXECUTING,
            n.c.attempt == attempt,
        ]

    def _pause(
        self,
        workflow_id: str,
        step_name: str,
        attempt: int,
        state: str,
        due_at: dt.datetime,
        error: str | None,
    ) -> Transition:
        n = self.nodes
        now = _now()
        stmt = (
            sa.update(n)
            .where(*self._running(workflow_id, step_name, attempt))
            .values(
                state=state, version=n.c.version + 1, due_at=due_at, error=error, claimed_by=None
            )
            .returning(*self._change_cols)
        )

        def tx(conn: sa.Connection) -> Transition:
            row = conn.execute(stmt).first()
            return Transition(changes=[self._change(row, now)] if row else [])

        return self.run(tx)

    def _settle(
        self, conn: sa.Connection, stmt: sa.Update, now: dt.datetime, *, ok: bool
    ) -> Transition:
        """Apply a step's terminal UPDATE, then everything downstream of it."""
        tr = Transition()
        row = conn.execute(stmt).first()
        if row is None:
            return tr
        tr.changes.append(self._change(row, now))
        terminal = 1 + self._propagate(
            conn, row.workflow_id, row.step_name, row.dependents, ok, now, tr
        )
        self._count_terminal(conn, row.workflow_id, terminal, now, tr)
        return tr

    def _propagate(
        self,
        conn: sa.Connection,
        workflow_id: str,
        source: str,
        dependents: list[str],
        ok: bool,
        now: dt.datetime,
        tr: Transition,
    ) -> int:
        """Tell `source`'s dependents it settled; returns how many steps it cancelled.

        A dependent counts a completed dependency off; one that tolerates failures
        (``allow_failed_deps``) counts off any settled dependency; any other is cancelled
        when a dependency did not complete, and so on transitively.
        """
        n = self.nodes
        cancelled = 0
        frontier: list[tuple[list[str], bool]] = [(dependents, ok)]
        while frontier:
            names, dep_ok = frontier.pop()
            if not names:
                continue
            counts_off = sa.true() if dep_ok else n.c.allow_failed_deps
            stmt = (
                sa.update(n)
                .where(
                    n.c.workflow_id == workflow_id,
                    n.c.step_name.in_(sorted(names)),
                    n.c.state == S.PENDING,
                )
                .values(
                    pending_deps=sa.case(
                        (counts_off, n.c.pending_deps - 1), else_=n.c.pending_deps
                    ),
                    state=sa.case(
                        (sa.and_(counts_off, n.c.pending_deps == 1), S.AVAILABLE),
                        (counts_off, n.c.state),
                        else_=S.CANCELLED,
                    ),
                    version=sa.case((counts_off, n.c.version), else_=n.c.version + 1),
                    finished_at=sa.case(
                        (counts_off, n.c.finished_at), else_=sa.literal(now, UTCDateTime)
                    ),
                    # when it became available: the Sweeper re-enqueues it if still so later
                    due_at=sa.case(
                        (sa.and_(counts_off, n.c.pending_deps == 1), sa.literal(now, UTCDateTime)),
                        else_=n.c.due_at,
                    ),
                )
                .returning(
                    *self._change_cols,
                    n.c.dependents,
                    sa.case((n.c.state == S.AVAILABLE, n.c.message), else_=sa.null()).label(
                        "ready_message"
                    ),
                )
            )
            for row in conn.execute(stmt):
                if row.state == S.AVAILABLE:
                    tr.ready.append(_as_dict(row.ready_message))
                elif row.state == S.CANCELLED:
                    cancelled += 1
                    tr.changes.append(self._change(row, now))
                    frontier.append((row.dependents, False))
        return cancelled
