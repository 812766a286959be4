"""The sender's identity of the *document* a job carries, across versions.

``dedup_key`` names one message or resource version (MSH-10,
``id|versionId``); ``doc_key`` names the document itself (TXA-12 / OBR-3,
``DocumentReference/<id>``), so the job that made an earlier version's
resources can be found when an edit or a new version arrives, and those
resources retired (kiwi_fhir/fhir/retire.py). Not unique: every version
of a document shares it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("doc_key", sa.String(512), nullable=True))
        batch.create_index("ix_jobs_doc_key", ["doc_key"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_doc_key")
        batch.drop_column("doc_key")
