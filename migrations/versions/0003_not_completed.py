"""Count on each workflow the steps that settled without completing.

``workflows.not_completed`` counts the steps discarded or cancelled so far, updated with
``remaining`` in the same UPDATE. A step's completion that brings ``remaining`` to zero
while ``not_completed`` is zero (and the workflow is not cancelled) knows, without
reading any step, that the workflow completed, and records the finish in its own
statement.

Workflows that existed before this revision get the count from their steps.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = context.config.attributes.get("schema")
    op.add_column(
        "workflows",
        sa.Column("not_completed", sa.Integer, nullable=False, server_default="0"),
        schema=schema,
    )
    meta = sa.MetaData(schema=schema)
    workflows = sa.Table("workflows", meta, sa.Column("id"), sa.Column("not_completed"))
    nodes = sa.Table("workflow_nodes", meta, sa.Column("workflow_id"), sa.Column("state"))
    settled_short = (
        sa.select(sa.func.count())
        .where(
            nodes.c.workflow_id == workflows.c.id,
            nodes.c.state.in_(["discarded", "cancelled"]),
        )
        .scalar_subquery()
    )
    op.execute(sa.update(workflows).values(not_completed=settled_short))


def downgrade() -> None:
    schema = context.config.attributes.get("schema")
    op.drop_column("workflows", "not_completed", schema=schema)
