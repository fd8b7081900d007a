"""batches and files remember the Idempotency-Key that created them; a batch
remembers its input's line count: batches.lines, idempotency_key, request_hash;
files.idempotency_key, request_hash

Revision ID: 0008
Revises: 0007
Create Date: 2025-01-08 00:00:00

Batches and files created before this revision have no key (nothing replays
them) and count 0 lines: a batch still validating during the upgrade is not
counted against its key's max_queued until its jobs exist (docs/openai.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("lines", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("idempotency_key", sa.String(256), nullable=True))
        batch.add_column(sa.Column("request_hash", sa.String(64), nullable=True))
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(256), nullable=True))
        batch.add_column(sa.Column("request_hash", sa.String(64), nullable=True))
    op.create_index(
        "uq_batches_idempotency", "batches", ["owner_key_id", "idempotency_key"], unique=True
    )
    op.create_index(
        "uq_files_idempotency", "files", ["owner_key_id", "idempotency_key"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_files_idempotency", table_name="files")
    op.drop_index("uq_batches_idempotency", table_name="batches")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("request_hash")
        batch.drop_column("idempotency_key")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("request_hash")
        batch.drop_column("idempotency_key")
        batch.drop_column("lines")
