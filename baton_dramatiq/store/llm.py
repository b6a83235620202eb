"""The LLM ledger: budget reservations, the record of each call, and what reads them.

A call inside a step goes through three moves, each one transaction:

  reserve_llm   hold the call's worst-case cost on the step and on the workflow, with
                one guarded UPDATE each (``... WHERE spent + reserved + :amount <= limit``),
                so parallel calls cannot overspend a budget together
  record_llm    insert the stats row (a paid call keeps its key and answer there) and the
                debug log, and turn the reservation into what was actually spent
  release_llm   give the reservation back after a call that failed

The stats row of a paid call is its durable record: a re-run of the step finds it by
``call_key`` (`find_llm_call`) and returns the answer instead of paying again.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

from .. import states as S
from ..errors import WorkflowNotFound
from .gateway import Gateway, _as_dict

#: slack in budget comparisons, so that float sums equal to the limit still fit
_EPSILON = 1e-12


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reservation was refused.

    Attributes:
      scope(str): ``"step"`` or ``"workflow"`` (over budget), ``"not_running"`` (the
        step is no longer executing, e.g. cancelled) or ``"missing"``.
      limit, spent, reserved(float): the budget and its ledger when over budget.
      state(str|None): the step's state when it is not running.
    """

    scope: str
    limit: float = 0.0
    spent: float = 0.0
    reserved: float = 0.0
    state: str | None = None


class _Refused(Exception):
    """Raised inside a reservation's transaction to roll it back."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.scope)
        self.refusal = refusal


class LLMLedger(Gateway):
    def llm_budget(self, workflow_id: str) -> float | None:
        """The workflow's ``max_cost_usd`` (None: no cap).

        Raises:
          WorkflowNotFound: no workflow has this id.
        """
        w = self.workflows
        with self.connect() as conn:
            row = conn.execute(sa.select(w.c.max_cost_usd).where(w.c.id == workflow_id)).first()
        if row is None:
            raise WorkflowNotFound(f"No workflow with id {workflow_id!r}")
        return row.max_cost_usd  # type: ignore[no-any-return]

    def find_llm_call(self, workflow_id: str, step_name: str, call_key: str) -> Any | None:
        """The stored answer of a paid call of this step with this key, None if none."""
        s = self.step_stats
        stmt = (
            sa.select(s.c.response)
            .where(
                s.c.workflow_id == workflow_id,
                s.c.step_name == step_name,
                s.c.call_key == call_key,
                s.c.cached.is_(False),
                s.c.response.is_not(None),
            )
            .order_by(s.c.id)
            .limit(1)
        )
        with self.connect() as conn:
            return conn.execute(stmt).scalar()

    def reserve_llm(
        self,
        workflow_id: str,
        step_name: str,
        amount: float,
        *,
        step_limit: float | None,
        running: bool,
        reclaim: bool = False,
    ) -> Refusal | None:
        """Hold `amount` USD on the step and the workflow, or say why not.

        Parameters:
          step_limit(float|None): the step's budget over all its attempts.
          running(bool): the step must be ``executing`` (False for a replay, which runs
            after the step finished and holds nothing on it).
          reclaim(bool): first give back what an earlier run of the step still holds (a
            run that died mid-call): only one run of a step executes at a time.

        Returns:
          None when reserved (both rows, or neither), else a Refusal.
        """
        n, w = self.nodes, self.workflows

        def tx(conn: sa.Connection) -> None:
            if running:
                if reclaim:
                    self._reclaim_llm(conn, workflow_id, step_name)
                limit = sa.literal(step_limit, sa.Float) if step_limit is not None else None
                where = [
                    n.c.workflow_id == workflow_id,
                    n.c.step_name == step_name,
                    n.c.state == S.EXECUTING,
                ]
                if limit is not None:
                    where.append(
                        n.c.llm_spent_usd + n.c.llm_reserved_usd + amount <= limit + _EPSILON
                    )
                row = conn.execute(
                    sa.update(n)
                    .where(*where)
                    .values(llm_reserved_usd=n.c.llm_reserved_usd + amount)
                    .returning(n.c.step_name)
                ).first()
                if row is None:
                    raise _Refused(self._llm_refusal(conn, workflow_id, step_name, step_limit))
            row = conn.execute(
                sa.update(w)
                .where(
                    w.c.id == workflow_id,
                    sa.or_(
                        w.c.max_cost_usd.is_(None),
                        w.c.llm_spent_usd + w.c.llm_reserved_usd + amount
                        <= w.c.max_cost_usd + _EPSILON,
                    ),
                )
                .values(llm_reserved_usd=w.c.llm_reserved_usd + amount)
                .returning(w.c.id)
            ).first()
            if row is None:
                current = conn.execute(
                    sa.select(w.c.max_cost_usd, w.c.llm_spent_usd, w.c.llm_reserved_usd).where(
                        w.c.id == workflow_id
                    )
                ).first()
                if current is None:
                    raise _Refused(Refusal("missing"))
                raise _Refused(
                    Refusal(
                        "workflow",
                        limit=current.max_cost_usd,
                        spent=current.llm_spent_usd,
                        reserved=current.llm_reserved_usd,
                    )
                )

        try:
            self.run(tx)
        except _Refused as refused:  # the transaction rolled back: nothing is held
            return refused.refusal
        return None

    def record_llm(
        self,
        stats: dict[str, Any],
        debug: dict[str, Any] | None,
        *,
        reserved: float,
        running: bool,
    ) -> None:
        """Record a call: its stats row, its debug log, and its cost in the ledgers.

        The reservation (`reserved` USD, held by `reserve_llm`) is replaced by the
        call's cost. The step's ledger counts the spend even when the step was cancelled
        meanwhile: a cancelled step's spend is still recorded.
        """
        workflow_id, step_name = stats["workflow_id"], stats["step_name"]
        cost = float(stats.get("cost_usd") or 0.0)
        if stats.get("response") is None:  # SQL NULL, not a JSON null
            stats = {**stats, "response": sa.null()}

        def tx(conn: sa.Connection) -> None:
            conn.execute(sa.insert(self.step_stats).values(**stats))
            if debug is not None:
                conn.execute(sa.insert(self.debug_logs).values(**debug))
            if reserved or cost:  # a cached answer moves no money
                self._settle_llm(conn, workflow_id, step_name, reserved, cost, running=running)

        self.run(tx)

    def release_llm(
        self,
        workflow_id: str,
        step_name: str,
        reserved: float,
        debug: dict[str, Any] | None,
        *,
        running: bool,
    ) -> None:
        """Give back a failed call's reservation and record its debug log."""

        def tx(conn: sa.Connection) -> None:
            if debug is not None:
                conn.execute(sa.insert(self.debug_logs).values(**debug))
            if reserved:
                self._settle_llm(conn, workflow_id, step_name, reserved, 0.0, running=running)

        self.run(tx)

    def insert_debug_log(self, debug: dict[str, Any]) -> None:
        """Record one debug log row (a call refused before it was sent)."""
        self.run(lambda conn: conn.execute(sa.insert(self.debug_logs).values(**debug)))

    # -- reads ------------------------------------------------------------------------

    def llm_cost_rows(self, workflow_id: str) -> list[Any]:
        """Per (step, model, cached): calls, tokens and cost of a workflow's LLM calls."""
        s = self.step_stats
        stmt = (
            sa.select(
                s.c.step_name,
                s.c.model,
                s.c.cached,
                sa.func.count().label("calls"),
                sa.func.coalesce(sa.func.sum(s.c.prompt_tokens), 0).label("prompt_tokens"),
                sa.func.coalesce(sa.func.sum(s.c.completion_tokens), 0).label("completion_tokens"),
                sa.func.coalesce(sa.func.sum(s.c.cost_usd), 0.0).label("cost_usd"),
            )
            .where(s.c.workflow_id == workflow_id)
            .group_by(s.c.step_name, s.c.model, s.c.cached)
            .order_by(s.c.step_name, s.c.model, s.c.cached)
        )
        with self.connect() as conn:
            return list(conn.execute(stmt).all())

    def llm_debug_logs(self, workflow_id: str, step_name: str | None = None) -> list[Any]:
        """A workflow's debug logs (of one step, when named), oldest first."""
        d = self.debug_logs
        stmt = sa.select(d).where(d.c.workflow_id == workflow_id)
        if step_name is not None:
            stmt = stmt.where(d.c.step_name == step_name)
        with self.connect() as conn:
            return list(conn.execute(stmt.order_by(d.c.at, d.c.id)).all())

    def llm_step(self, workflow_id: str, step_name: str) -> Any | None:
        """A step's state, actor, attempt and stored message, and the highest attempt
        number its LLM calls recorded; None when the step does not exist."""
        n, s, d = self.nodes, self.step_stats, self.debug_logs
        last_stat = (
            sa.select(sa.func.max(s.c.attempt))
            .where(s.c.workflow_id == workflow_id, s.c.step_name == step_name)
            .scalar_subquery()
        )
        last_log = (
            sa.select(sa.func.max(d.c.attempt))
            .where(d.c.workflow_id == workflow_id, d.c.step_name == step_name)
            .scalar_subquery()
        )
        stmt = sa.select(
            n.c.state,
            n.c.actor_name,
            n.c.attempt,
            n.c.message,
            last_stat.label("last_stat_attempt"),
            last_log.label("last_log_attempt"),
        ).where(n.c.workflow_id == workflow_id, n.c.step_name == step_name)
        with self.connect() as conn:
            return conn.execute(stmt).first()

    def step_message(self, workflow_id: str, step_name: str) -> dict[str, Any] | None:
        """The stored Dramatiq message of a step (its options carry toolkit settings)."""
        n = self.nodes
        stmt = sa.select(n.c.message).where(
            n.c.workflow_id == workflow_id, n.c.step_name == step_name
        )
        with self.connect() as conn:
            message = conn.execute(stmt).scalar()
        return _as_dict(message) if message is not None else None

    # -- helpers ----------------------------------------------------------------------

    def _settle_llm(
        self,
        conn: sa.Connection,
        workflow_id: str,
        step_name: str,
        reserved: float,
        cost: float,
        *,
        running: bool,
    ) -> None:
        n, w = self.nodes, self.workflows
        if running:
            conn.execute(
                sa.update(n)
                .where(n.c.workflow_id == workflow_id, n.c.step_name == step_name)
                .values(
                    llm_reserved_usd=self._llm_less(n.c.llm_reserved_usd, reserved),
                    llm_spent_usd=n.c.llm_spent_usd + cost,
                )
            )
        conn.execute(
            sa.update(w)
            .where(w.c.id == workflow_id)
            .values(
                llm_reserved_usd=self._llm_less(w.c.llm_reserved_usd, reserved),
                llm_spent_usd=w.c.llm_spent_usd + cost,
            )
        )

    def _llm_less(self, column: sa.Column[Any], amount: float) -> Any:
        """``column - amount``, never below zero (float sums may leave a tiny remainder)."""
        floor = sa.func.greatest if self.dialect == "postgresql" else sa.func.max
        return floor(column - amount, 0.0)

    def _reclaim_llm(self, conn: sa.Connection, workflow_id: str, step_name: str) -> None:
        n, w = self.nodes, self.workflows
        held = conn.execute(
            sa.select(n.c.llm_reserved_usd)
            .where(n.c.workflow_id == workflow_id, n.c.step_name == step_name)
            .with_for_update()
        ).scalar()
        if not held:
            return
        conn.execute(
            sa.update(n)
            .where(n.c.workflow_id == workflow_id, n.c.step_name == step_name)
            .values(llm_reserved_usd=0.0)
        )
        conn.execute(
            sa.update(w)
            .where(w.c.id == workflow_id)
            .values(llm_reserved_usd=self._llm_less(w.c.llm_reserved_usd, held))
        )

    def _llm_refusal(
        self, conn: sa.Connection, workflow_id: str, step_name: str, step_limit: float | None
    ) -> Refusal:
        n = self.nodes
        row = conn.execute(
            sa.select(n.c.state, n.c.llm_spent_usd, n.c.llm_reserved_usd).where(
                n.c.workflow_id == workflow_id, n.c.step_name == step_name
            )
        ).first()
        if row is None:
            return Refusal("missing")
        if row.state != S.EXECUTING:
            return Refusal("not_running", state=row.state)
        return Refusal(
            "step",
            limit=step_limit or 0.0,
            spent=row.llm_spent_usd,
            reserved=row.llm_reserved_usd,
        )
