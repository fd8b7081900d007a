"""idempotency keys remember which request they were first used for: request_hash

Revision ID: 0007
Revises: 0006
Create Date: 2025-01-07 00:00:00

Keys recorded before this revision have no hash: they replay as before,
whatever the body (docs/api.md, "Submit").
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("request_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("request_hash")
