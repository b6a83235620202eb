"""The schema, declared once.

The migrations in ``migrations/`` create exactly these tables; a test compares the
two. Times are stored in UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

#: the Alembic revision this code needs; `migrations.upgrade` brings a database to it
HEAD_REVISION = "0003"
VERSION_TABLE = "baton_schema_version"

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """An aware UTC datetime on every backend (SQLite keeps no zone, PostgreSQL does)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: sa.Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def build_metadata(schema: str | None = None) -> sa.MetaData:
    """Declare every table, in `schema` when given (PostgreSQL)."""
    md = sa.MetaData(schema=schema)

    sa.Table(
        "workflows",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("parent_id", sa.String(64), nullable=True),
        sa.Column("total_steps", sa.Integer, nullable=False),
        sa.Column("remaining", sa.Integer, nullable=False),  # steps not yet terminal
        sa.Column("cancelled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("max_cost_usd", sa.Float, nullable=True),
        sa.Column("inserted_at", UTCDateTime, nullable=False),
        # the LLM ledger (0002): paid so far, and held by calls in flight
        sa.Column("llm_spent_usd", sa.Float, nullable=False, server_default="0"),
        sa.Column("llm_reserved_usd", sa.Float, nullable=False, server_default="0"),
        # 0003: of the steps no longer remaining, how many did not complete
        sa.Column("not_completed", sa.Integer, nullable=False, server_default="0"),
        sa.Index("ix_workflows_inserted_at", "inserted_at"),
        sa.Index("ix_workflows_parent_id", "parent_id"),
    )

    sa.Table(
        "workflow_nodes",
        md,
        sa.Column("workflow_id", sa.String(64), primary_key=True),
        sa.Column("step_name", sa.String(255), primary_key=True),
        sa.Column("workflow_name", sa.Text, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),  # topological order
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("actor_name", sa.String(255), nullable=False),
        sa.Column("message", JSONType, nullable=False),  # the Dramatiq message to enqueue
        sa.Column("deps", JSONType, nullable=False),
        sa.Column("dependents", JSONType, nullable=False),
        sa.Column("pending_deps", sa.Integer, nullable=False),
        sa.Column("allow_failed_deps", sa.Boolean, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("has_result", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("result", JSONType, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("claimed_by", sa.String(255), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime, nullable=True),
        sa.Column("due_at", UTCDateTime, nullable=True),
        sa.Column("inserted_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=True),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        # the step's LLM ledger (0002), over all its attempts
        sa.Column("llm_spent_usd", sa.Float, nullable=False, server_default="0"),
        sa.Column("llm_reserved_usd", sa.Float, nullable=False, server_default="0"),
        sa.Index("ix_workflow_nodes_state_due", "state", "due_at"),
    )

    sa.Table(
        "workflow_completions",
        md,
        sa.Column("workflow_id", sa.String(64), primary_key=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("failed_steps", JSONType, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=False),
        sa.Column("published_at", UTCDateTime, nullable=True),
        sa.Index("ix_workflow_completions_finished_at", "finished_at"),
    )

    sa.Table(
        "workflow_step_stats",
        md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("workflow_id", sa.String(64), nullable=False),
        sa.Column("step_name", sa.String(255), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("prompt_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cost_usd", sa.Float, nullable=False, server_default="0"),
        sa.Column("latency_ms", sa.Float, nullable=False, server_default="0"),
        sa.Column("cached", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("at", UTCDateTime, nullable=False),
        # a paid call's identity and answer (0002): what a re-run of the step replays
        sa.Column("call_key", sa.String(64), nullable=True),
        sa.Column("response", JSONType, nullable=True),
        sa.Index("ix_workflow_step_stats_workflow", "workflow_id", "step_name"),
    )

    sa.Table(
        "workflow_debug_logs",
        md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("workflow_id", sa.String(64), nullable=False),
        sa.Column("step_name", sa.String(255), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("messages", JSONType, nullable=True),
        sa.Column("params", JSONType, nullable=True),
        sa.Column("response_text", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("cached", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("at", UTCDateTime, nullable=False),
        # 0002: the call's place in its run, its duration, whether a field was cut short
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
        sa.Column("latency_ms", sa.Float, nullable=False, server_default="0"),
        sa.Column("truncated", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Index("ix_workflow_debug_logs_workflow", "workflow_id", "step_name"),
        sa.Index("ix_workflow_debug_logs_at", "at"),
    )

    sa.Table(
        "workflow_leases",
        md,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    return md


#: names of every table `build_metadata` declares
TABLE_NAMES = tuple(build_metadata().tables)
