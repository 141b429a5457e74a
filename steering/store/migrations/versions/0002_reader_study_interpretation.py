"""Second round: reader-study sessions and adjudications (annotation app), automated feature
interpretations and their judge exchanges, features.explainer, and generations.error (why a row
failed, e.g. non-finite logits).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adjudications",
        sa.Column("task", sa.String(length=16), nullable=False),
        sa.Column("item_key", sa.String(length=200), nullable=False),
        sa.Column("adjudicator", sa.String(length=100), nullable=False),
        sa.Column("answers", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("readers", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=True),
        sa.PrimaryKeyConstraint("task", "item_key"),
    )
    op.create_table(
        "feature_interpretations",
        sa.Column("feature_id", sa.String(length=200), nullable=False),
        sa.Column("explainer", sa.String(length=32), nullable=False),
        sa.Column("scorer", sa.String(length=32), nullable=False),
        sa.Column("settings_hash", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("precision", sa.Float(), nullable=True),
        sa.Column("recall", sa.Float(), nullable=True),
        sa.Column("f1", sa.Float(), nullable=True),
        sa.Column("balanced_accuracy", sa.Float(), nullable=True),
        sa.Column("recall_by_quantile", sa.JSON(), nullable=False),
        sa.Column("n_active", sa.Integer(), nullable=False),
        sa.Column("n_inactive", sa.Integer(), nullable=False),
        sa.Column("examples", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=True),
        sa.PrimaryKeyConstraint("feature_id", "explainer"),
    )
    op.create_table(
        "interpretation_exchanges",
        sa.Column("feature_id", sa.String(length=200), nullable=False),
        sa.Column("explainer", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("prompt_hash", sa.String(length=64), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("from_cache", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("feature_id", "explainer", "stage", "batch"),
    )
    op.create_table(
        "sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("annotator", sa.String(length=100), nullable=False),
        sa.Column("credential", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("features") as batch_op:
        batch_op.add_column(sa.Column("explainer", sa.String(length=32), nullable=True))
    with op.batch_alter_table("generations") as batch_op:
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch_op:
        batch_op.drop_column("error")
    with op.batch_alter_table("features") as batch_op:
        batch_op.drop_column("explainer")
    op.drop_table("sessions")
    op.drop_table("interpretation_exchanges")
    op.drop_table("feature_interpretations")
    op.drop_table("adjudications")
