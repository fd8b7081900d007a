"""per-key quotas, rate limit, scopes and expiry; usage counters per key and hour

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 00:00:00

Nothing about a job already queued changes: existing keys get no limits, no
scope and no expiry (every new column is NULL), and usage starts counting
from the upgrade on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.Float(precision=53)
#: The jobs a key has not seen finish yet: what ``max_queued`` counts.
UNFINISHED = sa.text("status IN ('QUEUED', 'PROCESSING')")


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("max_queued", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rate_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rate_tat", Timestamp, nullable=True))
        batch.add_column(sa.Column("queued_hint", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("models", sa.Text(), nullable=True))
        batch.add_column(sa.Column("node_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("expires_at", Timestamp, nullable=True))
    op.create_index(
        "ix_jobs_owner_unfinished",
        "jobs",
        ["owner_key_id"],
        sqlite_where=UNFINISHED,
        postgresql_where=UNFINISHED,
    )
    op.create_table(
        "key_usage",
        sa.Column("key_id", BigId, primary_key=True),
        sa.Column("hour", Timestamp, primary_key=True),
        sa.Column("completed", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("failed", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("cancelled", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("llm_seconds", Timestamp, nullable=False, server_default="0"),
        sa.Index("ix_key_usage_hour", "hour"),
    )


def downgrade() -> None:
    op.drop_table("key_usage")
    op.drop_index("ix_jobs_owner_unfinished", table_name="jobs")
    with op.batch_alter_table("api_keys") as batch:
        for column in (
            "expires_at",
            "node_id",
            "models",
            "queued_hint",
            "rate_tat",
            "rate_limit",
            "max_queued",
        ):
            batch.drop_column(column)
