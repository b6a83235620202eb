"""The gateway: the only module that runs SQL against baton's tables.

Every state change is a guarded UPDATE (``... WHERE state IN (...) RETURNING ...``),
never a read followed by a write, so concurrent workers cannot both make the same
move. A dependent becomes ready through a counter (``pending_deps``) decremented in
the same transaction that settles its dependency, under the dependent's row lock: the
transaction that takes it to zero, and only that one, makes it ``available``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from .. import states as S
from ..errors import DuplicateWorkflowError, StoreError, WorkflowNotFound
from .engine import create_engine
from .tables import VERSION_TABLE, UTCDateTime, build_metadata

T = TypeVar("T")

#: SQLSTATEs worth running a transaction again for: deadlock, serialization failure
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})
_RETRIES = 8


@dataclasses.dataclass(frozen=True, slots=True)
class StepChange:
    """One published transition of one step."""

    workflow_id: str
    workflow_name: str
    step_name: str
    state: str
    worker: str
    attempt: int
    has_result: bool
    error: str | None
    version: int
    at: dt.datetime


@dataclasses.dataclass(slots=True)
class Transition:
    """What one store transaction changed: events to publish, messages to enqueue."""

    changes: list[StepChange] = dataclasses.field(default_factory=list)
    ready: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    finished: dict[str, Any] | None = None

    def __bool__(self) -> bool:
        return bool(self.changes or self.ready or self.finished)


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """A step a worker now owns (state ``executing``)."""

    workflow_id: str
    workflow_name: str
    step_name: str
    actor_name: str
    attempt: int
    deps: tuple[str, ...]
    allow_failed_deps: bool
    change: StepChange


_CHANGE_COLUMNS = (
    "workflow_id",
    "workflow_name",
    "step_name",
    "state",
    "actor_name",
    "attempt",
    "has_result",
    "error",
    "version",
)


class Store:
    """Durable workflow state in PostgreSQL (psycopg 3) or SQLite.

    Parameters:
      url_or_engine(str|Engine): ``postgresql+psycopg://...``, ``sqlite:///file.db``,
        ``sqlite://`` (in memory) or a SQLAlchemy Engine.
      schema(str|None): a PostgreSQL schema to keep the tables in.

    Raises:
      ConfigurationError: for a URL that is not PostgreSQL or SQLite.
    """

    def __init__(self, url_or_engine: str | sa.Engine, *, schema: str | None = None) -> None:
        if isinstance(url_or_engine, sa.Engine):
            self.engine = url_or_engine
        else:
            self.engine = create_engine(str(url_or_engine))
        self.schema = schema
        self.dialect = self.engine.dialect.name
        self.metadata = build_metadata(schema)
        tables = self.metadata.tables
        prefix = f"{schema}." if schema else ""
        self.workflows = tables[prefix + "workflows"]
        self.nodes = tables[prefix + "workflow_nodes"]
        self.completions = tables[prefix + "workflow_completions"]
        self.step_stats = tables[prefix + "workflow_step_stats"]
        self.debug_logs = tables[prefix + "workflow_debug_logs"]
        self.leases = tables[prefix + "workflow_leases"]
        # SQLite has one writer at a time: threads of this process queue here rather than
        # spinning on the file lock.
        self._local_lock = threading.RLock() if self.dialect == "sqlite" else None
        n = self.nodes
        self._change_cols = [n.c[name] for name in _CHANGE_COLUMNS]

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    # -- plumbing ---------------------------------------------------------------------

    @contextlib.contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A connection in a transaction, committed on success; driver errors wrapped."""
        lock = self._local_lock or contextlib.nullcontext()
        try:
            with lock, self.engine.begin() as conn:
                yield conn
        except sa.exc.DBAPIError as exc:
            raise StoreError(f"{type(exc.orig).__name__}: {exc.orig}".strip()) from exc

    def run(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run `fn` in one transaction, again after a deadlock or serialization failure."""
        for attempt in range(_RETRIES):
            try:
                with self.connect() as conn:
                    return fn(conn)
            except StoreError as exc:
                cause = exc.__cause__
                orig = getattr(cause, "orig", None)
                retry = getattr(orig, "sqlstate", None) in _RETRY_SQLSTATES or (
                    "database is locked" in str(orig)
                )
                if not retry or attempt == _RETRIES - 1:
                    raise
                time.sleep(0.002 * (2**attempt))
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        self.engine.dispose()

    def schema_revision(self) -> str | None:
        """The migration revision the database is at, None if never migrated."""
        table = sa.table(VERSION_TABLE, sa.column("version_num"), schema=self.schema)
        try:
            with self.connect() as conn:
                if not sa.inspect(conn).has_table(VERSION_TABLE, schema=self.schema):
                    return None
                return conn.execute(sa.select(table.c.version_num)).scalar()
        except StoreError:
            return None

    # -- insert -----------------------------------------------------------------------

    def insert_workflow(self, workflow: dict[str, Any], nodes: list[dict[str, Any]]) -> None:
        """Write a workflow and all its steps in one transaction.

        Raises:
          DuplicateWorkflowError: a workflow with this id exists; nothing was written.
        """

        def tx(conn: sa.Connection) -> None:
            exists = conn.execute(
                sa.select(self.workflows.c.id).where(self.workflows.c.id == workflow["id"])
            ).first()
            if exists:
                raise DuplicateWorkflowError(f"A workflow with id {workflow['id']!r} exists already")
            conn.execute(sa.insert(self.workflows), [workflow])
            conn.execute(sa.insert(self.nodes), nodes)

        try:
            self.run(tx)
        except StoreError as exc:
            if isinstance(getattr(exc.__cause__, "orig", None), Exception) and _is_unique_violation(
                exc.__cause__
            ):
                raise DuplicateWorkflowError(
                    f"A workflow with id {workflow['id']!r} exists already"
                ) from exc
            raise

    # -- transitions ------------------------------------------------------------------

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
                sa.select(n.c.state).where(n.c.workflow_id == workflow_id, n.c.step_name == step_name)
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
                .values(state=S.CANCELLED, version=n.c.version + 1, finished_at=now, claimed_by=None)
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
            self._count_terminal(conn, workflow_id, len(rows), now, tr)
            return tr

        return self.run(tx)

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

    def mark_published(self, workflow_id: str) -> None:
        """Record that `workflow_finished` went out for `workflow_id`."""
        c = self.completions
        stmt = sa.update(c).where(c.c.workflow_id == workflow_id).values(published_at=_now())
        self.run(lambda conn: conn.execute(stmt))

    # -- reads ------------------------------------------------------------------------

    def load_results(self, workflow_id: str, names: Sequence[str]) -> dict[str, tuple[str, Any]]:
        """``{step: (state, result)}`` for the named steps of one workflow."""
        if not names:
            return {}
        n = self.nodes
        stmt = sa.select(n.c.step_name, n.c.state, n.c.result).where(
            n.c.workflow_id == workflow_id, n.c.step_name.in_(list(names))
        )
        with self.connect() as conn:
            return {row.step_name: (row.state, row.result) for row in conn.execute(stmt)}

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
    ) -> list[sa.Row[Any]]:
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
            return list(conn.execute(stmt).all())

    def get_steps(self, workflow_id: str) -> list[sa.Row[Any]]:
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
            return list(conn.execute(stmt).all())

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

    # -- internals --------------------------------------------------------------------

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
            .values(state=state, version=n.c.version + 1, due_at=due_at, error=error, claimed_by=None)
            .returning(*self._change_cols)
        )

        def tx(conn: sa.Connection) -> Transition:
            row = conn.execute(stmt).first()
            return Transition(changes=[self._change(row, now)] if row else [])

        return self.run(tx)

    def _settle(self, conn: sa.Connection, stmt: sa.Update, now: dt.datetime, *, ok: bool) -> Transition:
        """Apply a step's terminal UPDATE, then everything downstream of it."""
        tr = Transition()
        row = conn.execute(stmt).first()
        if row is None:
            return tr
        tr.changes.append(self._change(row, now))
        terminal = 1 + self._propagate(conn, row.workflow_id, row.step_name, row.dependents, ok, now, tr)
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
                    pending_deps=sa.case((counts_off, n.c.pending_deps - 1), else_=n.c.pending_deps),
                    state=sa.case(
                        (sa.and_(counts_off, n.c.pending_deps == 1), S.AVAILABLE),
                        (counts_off, n.c.state),
                        else_=S.CANCELLED,
                    ),
                    version=sa.case((counts_off, n.c.version), else_=n.c.version + 1),
                    finished_at=sa.case(
                        (counts_off, n.c.finished_at), else_=sa.literal(now, UTCDateTime)
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

    def _count_terminal(
        self, conn: sa.Connection, workflow_id: str, count: int, now: dt.datetime, tr: Transition
    ) -> None:
        """Count `count` steps off the workflow; the transaction that reaches zero finishes it."""
        if count == 0:
            return
        w = self.workflows
        row = conn.execute(
            sa.update(w)
            .where(w.c.id == workflow_id)
            .values(remaining=w.c.remaining - count)
            .returning(w.c.remaining, w.c.cancelled, w.c.name)
        ).first()
        if row is None or row.remaining != 0:
            return
        n = self.nodes
        unfinished = conn.execute(
            sa.select(n.c.step_name, n.c.state, n.c.dependents)
            .where(n.c.workflow_id == workflow_id, n.c.state != S.COMPLETED)
            .order_by(n.c.position)
        ).all()
        failed_steps = [r.step_name for r in unfinished if r.state == S.DISCARDED]
        if row.cancelled:
            outcome = S.CANCELLED
        elif any(not r.dependents for r in unfinished):  # a sink did not complete
            outcome = "failed"
        else:
            outcome = S.COMPLETED
        conn.execute(
            sa.insert(self.completions).values(
                workflow_id=workflow_id, outcome=outcome, failed_steps=failed_steps, finished_at=now
            )
        )
        tr.finished = {
            "workflow_id": workflow_id,
            "workflow_name": row.name,
            "outcome": outcome,
            "failed_steps": failed_steps,
            "at": now.isoformat(),
        }

    @staticmethod
    def _change(row: Any, now: dt.datetime) -> StepChange:
        return StepChange(
            workflow_id=row.workflow_id,
            workflow_name=row.workflow_name,
            step_name=row.step_name,
            state=row.state,
            worker=row.actor_name,
            attempt=row.attempt,
            has_result=bool(row.has_result),
            error=row.error,
            version=row.version,
            at=now,
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _short(error: str, limit: int = 1000) -> str:
    return error if len(error) <= limit else error[: limit - 1] + "…"


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):  # SQLite returns JSON from a CASE expression as text
        import json

        return json.loads(value)  # type: ignore[no-any-return]
    return value  # type: ignore[no-any-return]


def _is_unique_violation(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(orig)
