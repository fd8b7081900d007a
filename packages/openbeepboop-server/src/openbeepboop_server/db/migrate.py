"""Alembic migrations, run programmatically: no ``alembic.ini`` at run time.

The revisions ship inside the package (``migrations/versions``) and are the
only way the schema is created. ``upgrade_to_head`` holds a lock for the whole
upgrade so that two servers (or a server and ``openbeepboop-server migrate``)
starting at once cannot both apply the same revision: on SQLite the upgrade
runs in one ``BEGIN IMMEDIATE`` transaction (the database's write lock), on
PostgreSQL under a transaction-scoped advisory lock. The second caller waits,
then finds nothing left to do.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from openbeepboop_server.db.database import Database, create_engine
from openbeepboop_server.errors import DatabaseAhead, DatabaseBehind

logger = logging.getLogger(__name__)

#: Key of the PostgreSQL advisory lock held while migrating ("OBBMIGR" in hex-ish).
PG_MIGRATION_LOCK_ID = 0x0BB_4D16


def _script_location() -> str:
    return str(resources.files("openbeepboop_server.db") / "migrations")


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic config pointing at the shipped revisions (and a connection, if given)."""
    config = Config()
    config.set_main_option("script_location", _script_location())
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this code ships."""
    head = _scripts().get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError("no migrations shipped")
    return head


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at, None for an empty database."""
    return MigrationContext.configure(connection).get_current_revision()


def _pending(current: str | None) -> list[str]:
    scripts = _scripts()
    if current is not None:
        try:
            scripts.get_revision(current)
        except Exception as exc:  # alembic raises several kinds for an unknown id
            raise DatabaseAhead(
                f"the database is at revision {current!r}, which this server does not know: "
                "it was migrated by a newer openbeepboop-server; upgrade the server"
            ) from exc
    revisions = list(scripts.iterate_revisions("heads", current))
    return [rev.revision for rev in reversed(revisions)]


def pending_revisions(url: str) -> list[str]:
    """Revisions not yet applied to the database at ``url``, oldest first; [] when current."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return _pending(current_revision(conn))
    finally:
        engine.dispose()


def ensure_current(db: Database) -> None:
    """Raise :class:`DatabaseBehind` unless the schema is at head.

    A SQLite file that does not exist is not created here (connecting would
    create it, empty): the error names the path, so a relative path that
    resolved somewhere unexpected shows at once.
    """
    missing = _missing_sqlite_file(db)
    if missing is not None:
        raise DatabaseBehind(
            f"there is no database at {missing} (a relative SQLite path in the config is "
            "taken from the config file's folder): run `openbeepboop-server migrate` to "
            "create it there, or fix [database] url"
        )
    with db.read() as conn:
        current = current_revision(conn)
    pending = _pending(current)
    if pending:
        raise DatabaseBehind(
            f"the database schema is at {current or 'nothing (empty database)'}, "
            f"this server needs {head_revision()}: run `openbeepboop-server migrate`"
        )


def _missing_sqlite_file(db: Database) -> Path | None:
    """The path of ``db``'s SQLite file if it does not exist yet, else None."""
    url = db.engine.url
    if url.get_backend_name() != "sqlite":
        return None
    name = url.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    path = Path(name)
    return None if path.exists() else path


def upgrade_to_head(url: str) -> list[str]:
    """Apply every pending revision to the database at ``url``, under a lock.

    Returns the revisions this call applied, oldest first: [] when another
    process applied them while this one waited for the lock.
    """
    return upgrade_to(url, "head")


def upgrade_to(url: str, revision: str) -> list[str]:
    """Upgrade to ``revision`` (tests use it to build an old database); what it applied."""
    engine = create_engine(url, foreign_keys=False, pool_size=1, max_overflow=0)
    try:
        return upgrade_engine(engine, revision)
    finally:
        engine.dispose()


def _between(before: str | None, after: str | None) -> list[str]:
    """The revisions after ``before`` up to ``after``, oldest first."""
    if after is None or before == after:
        return []
    revisions = _scripts().iterate_revisions(after, before)
    return [rev.revision for rev in reversed(list(revisions))]


def upgrade_engine(engine: sa.Engine, revision: str = "head") -> list[str]:
    """Upgrade through an existing engine, in one locked transaction; what it applied.

    The revisions applied are read inside the lock, so of two processes
    migrating at once only the one that did the work reports them.
    """
    sqlite = engine.dialect.name == "sqlite"
    options = {"openbeepboop_sqlite_begin": "IMMEDIATE"} if sqlite else {}
    with engine.connect() as conn:
        if sqlite:
            # Batch mode rebuilds tables with DROP + RENAME; with foreign keys on,
            # the DROP would cascade into child rows. The pragma only works
            # outside a transaction, hence on the driver connection, before BEGIN.
            conn.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
        conn.execution_options(**options)
        with conn.begin():
            if not sqlite:
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": PG_MIGRATION_LOCK_ID}
                )
            before = current_revision(conn)
            _pending(before)  # a revision this code does not know: DatabaseAhead, one line
            command.upgrade(alembic_config(conn), revision)
            after = current_revision(conn)
        if sqlite:
            conn.connection.driver_connection.execute("PRAGMA foreign_keys = ON")  # type: ignore[union-attr]
    if before != after:
        logger.info("database migrated from %s to %s", before or "empty", after)
    return _between(before, after)
