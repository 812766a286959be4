"""Who submitted a job, which job a new version replaced, and worker leases.

``owner`` scopes de-duplication to one caller (channel + authenticated
principal), so a duplicate never hands one caller another's result;
``superseded_by`` / ``supersedes`` link a new version of an unversioned
document to the job it replaced; ``lease_until`` lets a worker re-claim a
``processing`` job whose worker went away (database outage, crash);
``content_sha256`` hashes what would be extracted, so a resend with other
bytes (a new MSH-7, reformatted JSON) under the same identity is a duplicate.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("owner", sa.String(200), nullable=True))
        batch.add_column(sa.Column("superseded_by", sa.String(36), nullable=True))
        batch.add_column(sa.Column("supersedes", sa.String(36), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("content_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("content_sha256")
        batch.drop_column("lease_until")
        batch.drop_column("supersedes")
        batch.drop_column("superseded_by")
        batch.drop_column("owner")
