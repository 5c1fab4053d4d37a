"""Alembic migration scripts of the EMS store, applied in order by ``Store.migrate``."""
