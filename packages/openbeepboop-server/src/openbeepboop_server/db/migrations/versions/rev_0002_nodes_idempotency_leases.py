"""node registry, idempotency keys, lease history, backoff index

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column(
            "job_seq",
            BigId,
            sa.ForeignKey("jobs.seq", name="fk_leases_job_seq", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("key_id", BigId, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("claimed_at", Timestamp, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("ended_at", Timestamp, nullable=True),
        sa.UniqueConstraint("token", name="uq_leases_token"),
    )
    op.create_index("ix_leases_job_seq", "leases", ["job_seq"])
    # A lease taken under 0001 has no history row, so its token could never
    # be checked: hand those jobs back to the queue without counting the attempt.
    op.execute(
        "UPDATE jobs SET status = 'QUEUED', lease_token = NULL, lease_node_id = NULL, "
        "lease_key_id = NULL, lease_expires_at = NULL, "
        "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END "
        "WHERE status = 'PROCESSING'"
    )
    backoff = sa.text("status = 'QUEUED' AND not_before > 0")
    op.create_index(
        "ix_jobs_backoff",
        "jobs",
        ["not_before"],
        sqlite_where=backoff,
        postgresql_where=backoff,
    )
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("key_name", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("models", sa.Text(), nullable=False),
        sa.Column("first_seen", Timestamp, nullable=False),
        sa.Column("last_seen", Timestamp, nullable=False),
    )
    op.create_index("ix_nodes_last_seen", "nodes", ["last_seen"])
    op.create_table(
        "idempotency_keys",
        sa.Column("owner_key_id", BigId, primary_key=True),
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("job_ids", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("ix_idempotency_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("nodes")
    op.drop_index("ix_jobs_backoff", table_name="jobs")
    op.drop_table("leases")
