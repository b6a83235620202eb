"""Reads for the step context, the queries and the views."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from .. import states as S
from ..errors import WorkflowNotFound
from .gateway import Gateway


class Reads(Gateway):
    def get_workflow(self, workflow_id: str) -> sa.Row[Any]:
        """The workflow row joined with its completion; WorkflowNotFound if unknown."""
        stmt = self._workflow_select().where(self.workflows.c.id == workflow_id)
        with self.connect() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            raise WorkflowNotFound(f"No workflow with id {workflow_id!r}")
        return row

    def list_workflows(
        self, *, state: str | None, name_prefix: str | None, limit: int
    ) -> Sequence[Any]:
        w, c = self.workflows, self.completions
        stmt = self._workflow_select()
        if state == S.RUNNING:
            stmt = stmt.where(c.c.workflow_id.is_(None))
        elif state is not None:
            stmt = stmt.where(c.c.outcome == state)
        if name_prefix:
            escaped = name_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(w.c.name.like(escaped + "%", escape="\\"))
        stmt = stmt.order_by(w.c.inserted_at.desc(), w.c.id.desc()).limit(limit)
        with self.connect() as conn:
            return conn.execute(stmt).all()

    def get_steps(self, workflow_id: str) -> Sequence[Any]:
        n = self.nodes
        stmt = (
            sa.select(
                n.c.step_name,
                n.c.state,
                n.c.actor_name,
                n.c.attempt,
                n.c.deps,
                n.c.has_result,
                n.c.error,
                n.c.version,
                n.c.inserted_at,
                n.c.started_at,
                n.c.finished_at,
            )
            .where(n.c.workflow_id == workflow_id)
            .order_by(n.c.position)
        )
        with self.connect() as conn:
            return conn.execute(stmt).all()

    def get_results(self, workflow_id: str) -> dict[str, Any]:
        """``{step: result}`` of the completed steps of a workflow."""
        n = self.nodes
        stmt = (
            sa.select(n.c.step_name, n.c.result)
            .where(n.c.workflow_id == workflow_id, n.c.state == S.COMPLETED)
            .order_by(n.c.position)
        )
        with self.connect() as conn:
            return {row.step_name: row.result for row in conn.execute(stmt)}

    def _workflow_select(self) -> sa.Select[Any]:
        w, c = self.workflows, self.completions
        return sa.select(
            w.c.id,
            w.c.name,
            w.c.parent_id,
            w.c.inserted_at,
            w.c.cancelled,
            c.c.outcome,
            c.c.failed_steps,
            c.c.finished_at,
            c.c.published_at,
        ).select_from(w.outerjoin(c, c.c.workflow_id == w.c.id))
