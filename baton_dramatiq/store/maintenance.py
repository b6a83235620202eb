"""The Sweeper's SQL: the cluster-wide lease, rescues, missing finishes, pruning.

Every statement here touches a bounded number of rows, so a sweep never holds a lock
for long, however much there is to do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .. import states as S
from .gateway import Transition, _as_dict, _now
from .lifecycle import Lifecycle

#: states whose step should have a message somewhere, and when it was due
_RESCUABLE = (S.AVAILABLE, S.RETRYABLE, S.SNOOZED)


class Maintenance(Lifecycle):
    # -- the lease: one sweep at a time across every process --------------------------

    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take the lease `name` for `ttl` seconds unless another holder has it live."""
        le = self.leases
        now = _now()
        stmt = (
            (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(le)
            .values(name=name, holder=holder, expires_at=now + dt.timedelta(seconds=ttl))
            .on_conflict_do_update(
                index_elements=[le.c.name],
                set_={"holder": holder, "expires_at": now + dt.timedelta(seconds=ttl)},
                where=sa.or_(le.c.expires_at < now, le.c.holder == holder),
            )
            .returning(le.c.holder)
        )
        return self.run(lambda conn: conn.execute(stmt).first()) is not None

    def release_lease(self, name: str, holder: str) -> None:
        le = self.leases
        stmt = sa.delete(le).where(le.c.name == name, le.c.holder == holder)
        self.run(lambda conn: conn.execute(stmt))

    # -- rescue -----------------------------------------------------------------------

    def rescue_steps(self, *, overdue_before: dt.datetime, limit: int) -> list[dict[str, Any]]:
        """Mark up to `limit` steps that may have lost their message; return their messages.

        A step is rescued when it is ready, retryable or snoozed and was due before
        `overdue_before`, or executing with a claim nobody renewed since then. Marking
        (``due_at = now``) and selecting happen in one UPDATE, so each overdue step is
        returned once per `overdue_before` window, whoever else sweeps.
        """
        n = self.nodes
        now = _now()
        overdue = sa.or_(
            sa.and_(n.c.state.in_(_RESCUABLE), n.c.due_at < overdue_before),
            sa.and_(
                n.c.state == S.EXECUTING,
                n.c.heartbeat_at < overdue_before,
                sa.or_(n.c.due_at.is_(None), n.c.due_at < overdue_before),
            ),
        )
        candidates = sa.select(n.c.workflow_id, n.c.step_name).where(overdue).limit(limit)
        stmt = (
            sa.update(n)
            .where(sa.tuple_(n.c.workflow_id, n.c.step_name).in_(candidates), overdue)
            .values(due_at=now)
            .returning(n.c.message)
        )
        return self.run(lambda conn: [_as_dict(row.message) for row in conn.execute(stmt)])

    # -- finishes nobody published ----------------------------------------------------

    def unpublished_finishes(self, *, before: dt.datetime, limit: int) -> list[dict[str, Any]]:
        """`workflow_finished` payloads of workflows that finished before `before` and
        whose event was never marked published."""
        c, w = self.completions, self.workflows
        stmt = (
            sa.select(c.c.workflow_id, w.c.name, c.c.outcome, c.c.failed_steps, c.c.finished_at)
            .join(w, w.c.id == c.c.workflow_id)
            .where(c.c.published_at.is_(None), c.c.finished_at < before)
            .order_by(c.c.finished_at)
            .limit(limit)
        )
        with self.connect() as conn:
            return [
                {
                    "workflow_id": row.workflow_id,
                    "workflow_name": row.name,
                    "outcome": row.outcome,
                    "failed_steps": list(row.failed_steps),
                    "at": row.finished_at.isoformat(),
                }
                for row in conn.execute(stmt)
            ]

    def finish_orphans(self, limit: int) -> list[dict[str, Any]]:
        """Record the finish of workflows whose steps all settled but whose finish was
        never recorded (a crash in between, on PostgreSQL's one-statement completion).

        Returns:
          the `workflow_finished` payloads of the finishes recorded here.
        """
        w, c = self.workflows, self.completions
        orphans = (
            sa.select(w.c.id, w.c.name, w.c.cancelled)
            .where(
                w.c.remaining == 0,
                ~sa.exists().where(c.c.workflow_id == w.c.id),
            )
            .limit(limit)
        )
        with self.connect() as conn:
            rows = conn.execute(orphans).all()
        finished = []
        for row in rows:
            tr = Transition()

            def record(conn: sa.Connection, row: Any = row, tr: Transition = tr) -> None:
                self._finish(conn, row.id, row.name, row.cancelled, _now(), tr)

            self.run(record)
            if tr.finished is not None:
                finished.append(tr.finished)
        return finished

    # -- pruning ----------------------------------------------------------------------

    def finished_before(self, cutoff: dt.datetime, limit: int) -> list[str]:
        """Ids of up to `limit` workflows that finished before `cutoff`, oldest first."""
        c = self.completions
        stmt = (
            sa.select(c.c.workflow_id)
            .where(c.c.finished_at < cutoff)
            .order_by(c.c.finished_at)
            .limit(limit)
        )
        with self.connect() as conn:
            return list(conn.execute(stmt).scalars())

    def delete_rows(self, table: sa.Table, workflow_ids: list[str], chunk: int) -> tuple[int, int]:
        """Delete `table`'s rows of these workflows, `chunk` rows per transaction.

        Returns:
          (rows deleted, transactions used)
        """
        key = table.c.workflow_id
        pk = list(table.primary_key.columns)
        total = batches = 0
        while True:
            victims = sa.select(*pk).where(key.in_(workflow_ids)).limit(chunk)
            stmt = sa.delete(table).where(sa.tuple_(*pk).in_(victims))
            deleted = self.run(_rowcount(stmt))
            total, batches = total + deleted, batches + 1
            if deleted < chunk:
                return total, batches

    def delete_workflow_rows(self, workflow_ids: list[str]) -> int:
        """Delete the workflow and completion rows themselves, last, in one transaction."""
        c, w = self.completions, self.workflows

        def tx(conn: sa.Connection) -> int:
            conn.execute(sa.delete(c).where(c.c.workflow_id.in_(workflow_ids)))
            return int(conn.execute(sa.delete(w).where(w.c.id.in_(workflow_ids))).rowcount)

        return self.run(tx)

    def delete_debug_logs(self, cutoff: dt.datetime, chunk: int) -> int:
        """Delete debug logs older than `cutoff`, `chunk` rows per transaction."""
        d = self.debug_logs
        total = 0
        while True:
            victims = sa.select(d.c.id).where(d.c.at < cutoff).limit(chunk)
            stmt = sa.delete(d).where(d.c.id.in_(victims))
            deleted = self.run(_rowcount(stmt))
            total += deleted
            if deleted < chunk:
                return total

    def per_workflow_tables(self) -> list[sa.Table]:
        """Every table whose rows belong to one workflow, besides workflows/completions."""
        skip = {self.workflows.name, self.completions.name}
        return [
            table
            for table in self.metadata.sorted_tables
            if "workflow_id" in table.c and table.name not in skip
        ]


def _rowcount(stmt: sa.Delete) -> Callable[[sa.Connection], int]:
    def tx(conn: sa.Connection) -> int:
        return int(conn.execute(stmt).rowcount)

    return tx
