"""Write-back state of subscription jobs (FHIR Subscriptions, issue 7).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot ALTER TABLE ... ADD a column with an index otherwise.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("writeback", sa.String(16), nullable=True))
        batch.add_column(
            sa.Column("writeback_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("writeback_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_jobs_writeback", ["writeback"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_writeback")
        batch.drop_column("next_attempt_at")
        batch.drop_column("writeback_error")
        batch.drop_column("writeback_attempts")
        batch.drop_column("writeback")
