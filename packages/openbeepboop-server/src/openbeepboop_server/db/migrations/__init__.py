"""Alembic environment and revisions (loaded by path by Alembic, not imported)."""
