"""An index on jobs' state, for the job gauges' counts and oldest queued job.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Counting by state and finding the oldest queued job run every few seconds: without it each is a
    # scan of every job ever run.
    op.create_index("ix_jobs_state_create_time", "jobs", ["state", "create_time"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state_create_time", table_name="jobs")
