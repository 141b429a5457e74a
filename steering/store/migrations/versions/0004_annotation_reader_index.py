"""An index on annotations(annotator, task, item_key): a reader's own answers, which the reader's
loop joins to their queue on every request (on PostgreSQL, uq_annotation — item first — was
scanned whole for each queued item: quadratic in the queue length).

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_annotation_reader", "annotations", ["annotator", "task", "item_key"])


def downgrade() -> None:
    op.drop_index("ix_annotation_reader", table_name="annotations")
