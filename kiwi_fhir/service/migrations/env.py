"""Alembic environment: online migrations on the connection the store hands in.

``alembic upgrade head`` from the repository root works too (``alembic.ini``
there); the URL then comes from ``KIWI_FHIR_DB`` or the ini file.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from kiwi_fhir.service.store import Base

config = context.config
target_metadata = Base.metadata


def _run() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = os.environ.get("KIWI_FHIR_DB") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(str(url))
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


_run()
