"""files and batches of the OpenAI-compatible surface; a job's batch and line

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-04 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("seq", BigId, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("owner_key_id", BigId, nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("lines", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.UniqueConstraint("id", name="uq_files_id"),
        sa.Index("ix_files_owner_seq", "owner_key_id", "seq"),
    )
    op.create_table(
        "file_chunks",
        sa.Column("file_seq", BigId, primary_key=True),
        sa.Column("part", sa.Integer(), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "batches",
        sa.Column("seq", BigId, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("owner_key_id", BigId, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.String(256), nullable=False),
        sa.Column("input_file_id", sa.String(64), nullable=False),
        sa.Column("completion_window", sa.String(32), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.Column("errors", sa.Text(), nullable=True),
        sa.Column("output_file_id", sa.String(64), nullable=True),
        sa.Column("error_file_id", sa.String(64), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("completed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("in_progress_at", Timestamp, nullable=True),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("finalizing_at", Timestamp, nullable=True),
        sa.Column("completed_at", Timestamp, nullable=True),
        sa.Column("failed_at", Timestamp, nullable=True),
        sa.Column("expired_at", Timestamp, nullable=True),
        sa.Column("cancelling_at", Timestamp, nullable=True),
        sa.Column("cancelled_at", Timestamp, nullable=True),
        sa.UniqueConstraint("id", name="uq_batches_id"),
        sa.Index("ix_batches_owner_seq", "owner_key_id", "seq"),
        sa.Index("ix_batches_status", "status"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("batch_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("batch_line", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("custom_id", sa.Text(), nullable=True))
    # Partial: jobs submitted natively never enter it.
    in_batch = sa.text("batch_id IS NOT NULL")
    op.create_index(
        "ix_jobs_batch",
        "jobs",
        ["batch_id", "status"],
        sqlite_where=in_batch,
        postgresql_where=in_batch,
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_batch", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("custom_id")
        batch.drop_column("batch_line")
        batch.drop_column("batch_id")
    op.drop_table("batches")
    op.drop_table("file_chunks")
    op.drop_table("files")
