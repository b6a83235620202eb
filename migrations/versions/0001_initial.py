"""The initial schema: workflows, steps, completions, LLM stats, debug logs, leases.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

from baton_dramatiq.store.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def _schema() -> str | None:
    return context.config.attributes.get("schema")


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("parent_id", sa.String(64), nullable=True),
        sa.Column("total_steps", sa.Integer, nullable=False),
        sa.Column("remaining", sa.Integer, nullable=False),
        sa.Column("cancelled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("max_cost_usd", sa.Float, nullable=True),
        sa.Column("inserted_at", UTCDateTime, nullable=False),
        schema=schema,
    )
    op.create_index("ix_workflows_inserted_at", "workflows", ["inserted_at"], schema=schema)
    op.create_index("ix_workflows_parent_id", "workflows", ["parent_id"], schema=schema)

    op.create_table(
        "workflow_nodes",
        sa.Column("workflow_id", sa.String(64), primary_key=True),
        sa.Column("step_name", sa.String(255), primary_key=True),
        sa.Column("workflow_name", sa.Text, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("actor_name", sa.String(255), nullable=False),
        sa.Column("message", JSON, nullable=False),
        sa.Column("deps", JSON, nullable=False),
        sa.Column("dependents", JSON, nullable=False),
        sa.Column("pending_deps", sa.Integer, nullable=False),
        sa.Column("allow_failed_deps", sa.Boolean, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("has_result", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("result", JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("claimed_by", sa.String(255), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime, nullable=True),
        sa.Column("due_at", UTCDateTime, nullable=True),
        sa.Column("inserted_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=True),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        schema=schema,
    )
    op.create_index(
        "ix_workflow_nodes_state_due", "workflow_nodes", ["state", "due_at"], schema=schema
    )

    op.create_table(
        "workflow_completions",
        sa.Column("workflow_id", sa.String(64), primary_key=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("failed_steps", JSON, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=False),
        sa.Column("published_at", UTCDateTime, nullable=True),
        schema=schema,
    )
    op.create_index(
        "ix_workflow_completions_finished_at",
        "workflow_completions",
        ["finished_at"],
        schema=schema,
    )

    op.create_table(
        "workflow_step_stats",
        sa.Column("id", BIGID, primary_key=True),
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
        schema=schema,
    )
    op.create_index(
        "ix_workflow_step_stats_workflow",
        "workflow_step_stats",
        ["workflow_id", "step_name"],
        schema=schema,
    )

    op.create_table(
        "workflow_debug_logs",
        sa.Column("id", BIGID, primary_key=True),
        sa.Column("workflow_id", sa.String(64), nullable=False),
        sa.Column("step_name", sa.String(255), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("messages", JSON, nullable=True),
        sa.Column("params", JSON, nullable=True),
        sa.Column("response_text", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("cached", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("at", UTCDateTime, nullable=False),
        schema=schema,
    )
    op.create_index(
        "ix_workflow_debug_logs_workflow",
        "workflow_debug_logs",
        ["workflow_id", "step_name"],
        schema=schema,
    )
    op.create_index("ix_workflow_debug_logs_at", "workflow_debug_logs", ["at"], schema=schema)

    op.create_table(
        "workflow_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        schema=schema,
    )


def downgrade() -> None:
    schema = _schema()
    for table in (
        "workflow_leases",
        "workflow_debug_logs",
        "workflow_step_stats",
        "workflow_completions",
        "workflow_nodes",
        "workflows",
    ):
        op.drop_table(table, schema=schema)  # drops the table's indexes with it
