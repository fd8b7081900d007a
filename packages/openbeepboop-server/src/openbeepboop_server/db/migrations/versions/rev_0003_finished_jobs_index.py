"""index of finished jobs by status and completion time, for the pool status

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Partial: only finished jobs have completed_at, so submits and claims
    # never touch this index; a job enters it once, when it ends.
    finished = sa.text("completed_at IS NOT NULL")
    op.create_index(
        "ix_jobs_finished",
        "jobs",
        ["status", "completed_at", "model", "owner_key_id"],
        sqlite_where=finished,
        postgresql_where=finished,
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_finished", table_name="jobs")
