"""Alembic migrations of the EMS store (run by :func:`sef.ems.store.migrate`)."""
