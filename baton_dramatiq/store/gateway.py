"""The gateway's plumbing: engine, tables, transactions, and what transitions return.

All SQL against baton's tables lives in this package (`gateway`, `lifecycle`,
`transitions`, `reads`, `llm`), composed into `Store` in `sql`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..errors import StoreError
from .driver import RETRIES, RETRY_SQLSTATES, Driver, pause_before_retry, store_error
from .engine import create_engine
from .tables import VERSION_TABLE, build_metadata

T = TypeVar("T")


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
    dependents: tuple[str, ...]
    allow_failed_deps: bool
    change: StepChange
    #: ``{dependency: (state, result)}``, read in the claiming transaction
    results: dict[str, tuple[str, Any]] = dataclasses.field(default_factory=dict)


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


class Gateway:
    """Engine, tables and transactions; `Store` documents its parameters."""

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
        self._change_cols_names = _CHANGE_COLUMNS
        #: PostgreSQL: the hot path on the driver (claims, completions, inserts, finishes)
        self.driver = Driver(self.engine) if self.dialect == "postgresql" else None

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
            raise store_error(exc.orig or exc) from exc

    def run(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run `fn` in one transaction, again after a deadlock or serialization failure."""
        for attempt in range(RETRIES):
            try:
                with self.connect() as conn:
                    return fn(conn)
            except StoreError as exc:
                cause = exc.__cause__
                orig = getattr(cause, "orig", None)
                retry = getattr(orig, "sqlstate", None) in RETRY_SQLSTATES or (
                    "database is locked" in str(orig)
                )
                if not retry or attempt == RETRIES - 1:
                    raise
                pause_before_retry(attempt)
        raise AssertionError("unreachable")

    def insert_ignoring_duplicates(self, table: sa.Table) -> Any:
        """``INSERT ... ON CONFLICT DO NOTHING`` for this store's dialect."""
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        return insert(table).on_conflict_do_nothing()

    def dispose(self) -> None:
        if self.driver is not None:
            self.driver.dispose()
        self.engine.dispose()

    def schema_revision(self) -> str | None:
        """The migration revision the database is at, None if never migrated.

        Raises:
          StoreError: the database cannot be reached.
        """
        table = sa.table(VERSION_TABLE, sa.column("version_num"), schema=self.schema)
        with self.connect() as conn:
            if not sa.inspect(conn).has_table(VERSION_TABLE, schema=self.schema):
                return None
            revision: str | None = conn.execute(sa.select(table.c.version_num)).scalar()
            return revision

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
        return json.loads(value)  # type: ignore[no-any-return]
    return value  # type: ignore[no-any-return]


def _is_unique_violation(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", exc)  # SQLAlchemy's wrapper, or the driver's own error
    return getattr(orig, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(orig)
