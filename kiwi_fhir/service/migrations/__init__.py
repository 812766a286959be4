"""Alembic migrations of the intake store (run by ``IntakeStore.migrate``)."""
