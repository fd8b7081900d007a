"""fair share between owners and job priorities: jobs.priority and claim_rank,
api_keys.weight and max_priority, the per-(model, owner) virtual time

Revision ID: 0006
Revises: 0005
Create Date: 2025-01-06 00:00:00

Nothing about a job already queued changes: it gets priority 0 and a claim
rank equal to its submit time, which is exactly what a new job of priority 0
gets (docs/api.md, "Claim order").
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.Float(precision=53)


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("weight", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(
            sa.Column("max_priority", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("claim_rank", Timestamp, nullable=True))
    # A queued job of priority 0 ranks by its submit time: the same as before.
    op.execute("UPDATE jobs SET claim_rank = created_at")
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("claim_rank", existing_type=Timestamp, nullable=False)
    op.create_index(
        "ix_jobs_fair", "jobs", ["status", "model", "owner_key_id", "claim_rank", "seq"]
    )
    op.create_table(
        "fair_shares",
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("owner_key_id", BigId, primary_key=True),
        sa.Column("virtual_time", Timestamp, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("fair_shares")
    op.drop_index("ix_jobs_fair", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("claim_rank")
        batch.drop_column("priority")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("max_priority")
        batch.drop_column("weight")
