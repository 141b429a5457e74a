"""The first build's schema: cases, features, generations, extractions, verdicts, judge_cache,
annotations, queue_items, feature_contexts, feature_stats, mining_progress, mining_state,
activation_checks (a study of that schema: tests/data/study_v0.sqlite).

Studies written before migrations existed have these tables and no version table; radsteer
stamps them with this revision and upgrades them from here. Nothing to do in the upgrade itself.

Revision ID: 0001
Revises:
"""

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
