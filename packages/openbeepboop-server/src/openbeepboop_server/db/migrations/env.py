"""Alembic environment: run on the connection the caller hands us.

:mod:`openbeepboop_server.db.migrate` opens the connection, takes the lock and
passes the connection in ``config.attributes["connection"]``. For developers
writing a new revision, ``alembic -x url=sqlite:///dev.db revision --autogenerate``
with ``script_location`` pointing here also works.
"""

from __future__ import annotations

from alembic import context

from openbeepboop_server.db.database import create_engine
from openbeepboop_server.db.tables import metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate over the caller's connection, or over ``-x url=...`` from the alembic CLI."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass the database with: alembic -x url=sqlite:///PATH ...")
    engine = create_engine(url, foreign_keys=False)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported")
run_migrations_online()
