"""Alembic migrations: the only way the catalog schema is created or changed."""
