"""Workflow-level writes: insert a whole workflow, cancel it, finish it exactly once."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import sqlalchemy as sa
from psycopg.types.json import Jsonb

from .. import states as S
from ..errors import DuplicateWorkflowError, StoreError, WorkflowNotFound
from .gateway import Gateway, Transition, _is_unique_violation, _now
from .hot import NODE_JSON_KEYS, HotStatements


def _insert_params(workflow: dict[str, Any], nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Parameters of `HotStatements.insert`: the workflow's columns, its steps as JSON."""
    steps = [{key: node[key] for key in NODE_JSON_KEYS} for node in nodes]
    return {**workflow, "p_nodes": Jsonb(steps), "p_now": workflow["inserted_at"]}


class Lifecycle(Gateway):
    def insert_workflow(self, workflow: dict[str, Any], nodes: list[dict[str, Any]]) -> None:
        """Write a workflow and all its steps in one transaction.

        Raises:
          DuplicateWorkflowError: a workflow with this id exists; nothing was written.
        """

        def duplicate() -> DuplicateWorkflowError:
            return DuplicateWorkflowError(f"A workflow with id {workflow['id']!r} exists already")

        def tx(conn: sa.Connection) -> None:
            exists = conn.execute(
                sa.select(self.workflows.c.id).where(self.workflows.c.id == workflow["id"])
            ).first()
            if exists:
                raise duplicate()
            conn.execute(sa.insert(self.workflows), [workflow])
            conn.execute(sa.insert(self.nodes), nodes)

        try:
            if self.driver is not None:
                self.driver.execute(self._hot.insert(workflow), _insert_params(workflow, nodes))
            else:
                self.run(tx)
        except StoreError as exc:
            # an insert racing ours with the same id, past the check (or with none)
            if exc.__cause__ is not None and _is_unique_violation(exc.__cause__):
                raise duplicate() from exc
            raise

    def cancel_workflow(self, workflow_id: str) -> Transition:
        """Cancel every step not yet terminal; the workflow's outcome becomes cancelled.

        Raises:
          WorkflowNotFound: no workflow has this id.
        """
        n, w = self.nodes, self.workflows
        now = _now()

        def tx(conn: sa.Connection) -> Transition:
            tr = Transition()
            rows = conn.execute(
                sa.update(n)
                .where(n.c.workflow_id == workflow_id, n.c.state.notin_(S.TERMINAL))
                .values(
                    state=S.CANCELLED, version=n.c.version + 1, finished_at=now, claimed_by=None
                )
                .returning(*self._change_cols)
            ).all()
            tr.changes.extend(self._change(row, now) for row in rows)
            marked = conn.execute(
                sa.update(w)
                .where(w.c.id == workflow_id, w.c.remaining > 0)
                .values(cancelled=True)
                .returning(w.c.id)
            ).first()
            if marked is None and not rows:
                if conn.execute(sa.select(w.c.id).where(w.c.id == workflow_id)).first() is None:
                    raise WorkflowNotFound(f"No workflow with id {workflow_id!r}")
                return tr  # finished already: a cancel changes nothing
            self._count_terminal(conn, workflow_id, len(rows), now, tr, completed=0)
            return tr

        return self.run(tx)

    def mark_published(self, *workflow_ids: str) -> None:
        """Record that `workflow_finished` went out for each of `workflow_ids`."""
        if self.driver is not None:
            params = {"wids": list(workflow_ids), "now": _now()}
            self.driver.execute(self._hot.mark_published, params)
            return
        c = self.completions
        stmt = sa.update(c).where(c.c.workflow_id.in_(workflow_ids)).values(published_at=_now())
        self.run(lambda conn: conn.execute(stmt))

    @functools.cached_property
    def _count_off(self) -> sa.Update:
        w = self.workflows
        return (
            sa.update(w)
            .where(w.c.id == sa.bindparam("p_wid"))
            .values(
                remaining=w.c.remaining - sa.bindparam("p_count", type_=sa.Integer),
                not_completed=w.c.not_completed + sa.bindparam("p_short", type_=sa.Integer),
            )
            .returning(w.c.remaining, w.c.cancelled, w.c.name)
        )

    def _count_terminal(
        self,
        conn: sa.Connection,
        workflow_id: str,
        count: int,
        now: dt.datetime,
        tr: Transition,
        *,
        completed: int,
    ) -> None:
        """Count `count` settled steps off the workflow, of which `completed` completed;
        the transaction that reaches zero finishes it."""
        if count == 0:
            return
        params = {"p_wid": workflow_id, "p_count": count, "p_short": count - completed}
        row = conn.execute(self._count_off, params).first()
        if row is not None and row.remaining == 0:
            self._finish(conn, workflow_id, row.name, row.cancelled, now, tr)

    def _finish(
        self,
        conn: sa.Connection,
        workflow_id: str,
        name: str,
        cancelled: bool,
        now: dt.datetime,
        tr: Transition,
    ) -> None:
        """Record the finish of a workflow whose last step just settled, exactly once."""
        n = self.nodes
        unfinished = conn.execute(
            sa.select(n.c.step_name, n.c.state, n.c.dependents)
            .where(n.c.workflow_id == workflow_id, n.c.state != S.COMPLETED)
            .order_by(n.c.position)
        ).all()
        failed_steps = [r.step_name for r in unfinished if r.state == S.DISCARDED]
        if cancelled:
            outcome = S.CANCELLED
        elif any(not r.dependents for r in unfinished):  # a sink did not complete
            outcome = "failed"
        else:
            outcome = S.COMPLETED
        recorded = conn.execute(
            self.insert_ignoring_duplicates(self.completions).values(
                workflow_id=workflow_id, outcome=outcome, failed_steps=failed_steps, finished_at=now
            )
        ).rowcount
        if not recorded:
            return  # recorded already (by the Sweeper, after a crash): it publishes it
        tr.finished = self._finished(workflow_id, name, outcome, failed_steps, now)

    @staticmethod
    def _finished(
        workflow_id: str, name: str, outcome: str, failed_steps: list[str], now: dt.datetime
    ) -> dict[str, Any]:
        """The `workflow_finished` payload."""
        return {
            "workflow_id": workflow_id,
            "workflow_name": name,
            "outcome": outcome,
            "failed_steps": failed_steps,
            "at": now.isoformat(),
        }

    @functools.cached_property
    def _hot(self) -> HotStatements:
        """PostgreSQL: the statements the driver runs, for this store's tables."""
        prep = self.engine.dialect.identifier_preparer
        return HotStatements(
            nodes=prep.format_table(self.nodes),
            workflows=prep.format_table(self.workflows),
            completions=prep.format_table(self.completions),
            change_cols=self._change_cols_names,
        )
