"""The LLM toolkit: budget ledgers, the replay record of paid calls, richer debug logs.

- ``workflows`` and ``workflow_nodes`` get ``llm_spent_usd`` (paid so far) and
  ``llm_reserved_usd`` (held by calls in flight): a call reserves its worst case with one
  guarded UPDATE, so parallel steps cannot overspend a budget together.
- ``workflow_step_stats`` gets ``call_key`` and ``response``: a paid call's identity and
  answer, which a re-run of the step returns instead of paying again.
- ``workflow_debug_logs`` gets ``position`` (the call's place in its run),
  ``latency_ms`` and ``truncated`` (a field was cut to the size cap).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _columns() -> list[tuple[str, sa.Column]]:  # type: ignore[type-arg]
    money = {"nullable": False, "server_default": "0"}
    return [
        ("workflows", sa.Column("llm_spent_usd", sa.Float, **money)),
        ("workflows", sa.Column("llm_reserved_usd", sa.Float, **money)),
        ("workflow_nodes", sa.Column("llm_spent_usd", sa.Float, **money)),
        ("workflow_nodes", sa.Column("llm_reserved_usd", sa.Float, **money)),
        ("workflow_step_stats", sa.Column("call_key", sa.String(64), nullable=True)),
        ("workflow_step_stats", sa.Column("response", JSON, nullable=True)),
        ("workflow_debug_logs", sa.Column("position", sa.Integer, **money)),
        ("workflow_debug_logs", sa.Column("latency_ms", sa.Float, **money)),
        (
            "workflow_debug_logs",
            sa.Column("truncated", sa.Boolean, nullable=False, server_default=sa.false()),
        ),
    ]


def upgrade() -> None:
    schema = context.config.attributes.get("schema")
    for table, column in _columns():
        op.add_column(table, column, schema=schema)


def downgrade() -> None:
    schema = context.config.attributes.get("schema")
    for table, column in reversed(_columns()):
        op.drop_column(table, column.name, schema=schema)
