"""``openbeepboop-server setup``: write the config, create the database, issue the admin key.

On a terminal it asks for each value (showing the default); every question
has a flag twin, and without a terminal (or with ``--non-interactive``) an
unanswered question takes its default, so scripts never hang on a prompt.

It refuses to touch an existing config file or a database that already holds
tables unless ``--force`` is given. Even then it never deletes a job: an
existing database is migrated in place, keeps its data and gets one more
admin key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
from openbeepboop_schemas import Role

from openbeepboop_server.cli.options import config_option, is_interactive, resolve_config_path
from openbeepboop_server.config import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_ATTEMPTS_CEILING,
    MIN_LEASE_SECONDS,
    SQLITE_SYNCHRONOUS_MODES,
    ConfigError,
    Settings,
    default_database_url,
    display_url,
    load_settings,
    parse_settings,
    sqlite_path,
    write_private_file,
)
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.migrate import upgrade_to_head
from openbeepboop_server.errors import KeyNameTaken
from openbeepboop_server.keys import KeyService
from openbeepboop_server.queue.policy import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETENTION_DAYS,
)

DEFAULT_ADMIN_KEY_NAME = "admin"


@dataclass(frozen=True)
class DatabaseState:
    """What is already at a database URL."""

    tables: tuple[str, ...]
    jobs: int | None

    @property
    def empty(self) -> bool:
        """True when there is nothing to protect."""
        return not self.tables


def inspect_database(url: str) -> DatabaseState:
    """Tables and job count at ``url``; creates nothing (a missing SQLite file stays missing)."""
    path = sqlite_path(url)
    if path is not None and (not path.exists() or path.stat().st_size == 0):
        return DatabaseState(tables=(), jobs=None)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            tables = tuple(sorted(sa.inspect(connection).get_table_names()))
            jobs = None
            if "jobs" in tables:
                jobs = int(connection.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one())
    finally:
        engine.dispose()
    return DatabaseState(tables=tables, jobs=jobs)


def _make_folder(database_file: Path) -> None:
    """Create the SQLite file's folder: setup is where a database (and its place) is made."""
    folder = database_file.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = f" at {exc.filename}" if exc.filename and Path(exc.filename) != folder else ""
        raise click.ClickException(
            f"cannot create folder {folder} for the SQLite database {database_file}: "
            f"{exc.strerror or exc}{where}"
        ) from None


def _ask(interactive: bool, given: Any, text: str, default: Any, value_type: Any = None) -> Any:
    if given is not None:
        return given
    if not interactive:
        return default
    return click.prompt(text, default=default, type=value_type, show_default=True)


def _previous(config: Path) -> Settings | None:
    """The settings of an existing config, to offer as defaults under ``--force``."""
    try:
        return load_settings(config)
    except ConfigError:
        return None


def _issue_admin_key(url: str, sqlite_synchronous: str, name: str, reuse: bool) -> str:
    db = Database.connect(url, sqlite_synchronous=sqlite_synchronous)
    try:
        keys = KeyService(db)
        candidate, suffix = name, 1
        while True:
            try:
                key, _ = keys.create(Role.ADMIN, candidate)
                return key
            except KeyNameTaken:
                if not reuse:
                    raise
                suffix += 1
                candidate = f"{name}-{suffix}"
    finally:
        db.dispose()


@click.command()
@config_option
@click.option("--database-url", help="SQLAlchemy URL (default: SQLite in the user data dir).")
@click.option("--host", help=f"Address to listen on (default {DEFAULT_HOST}).")
@click.option("--port", type=click.IntRange(0, 65535), help=f"Port (default {DEFAULT_PORT}).")
@click.option(
    "--lease-seconds",
    type=click.FloatRange(min=MIN_LEASE_SECONDS),
    help=f"How long a node holds a job between heartbeats (default {DEFAULT_LEASE_SECONDS:g}).",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1, max=MAX_ATTEMPTS_CEILING),
    help=f"Attempts before a job fails (default {DEFAULT_MAX_ATTEMPTS}).",
)
@click.option(
    "--retention-days",
    type=click.FloatRange(min=0, min_open=True),
    help=f"How long finished jobs are kept (default {DEFAULT_RETENTION_DAYS:g}).",
)
@click.option(
    "--sqlite-synchronous",
    type=click.Choice(SQLITE_SYNCHRONOUS_MODES, case_sensitive=False),
    help="SQLite durability: NORMAL survives a crash, FULL also a power cut (default NORMAL).",
)
@click.option(
    "--admin-key-name",
    default=DEFAULT_ADMIN_KEY_NAME,
    show_default=True,
    help="Name of the admin key created.",
)
@click.option("--non-interactive", is_flag=True, help="Never prompt; unset values take defaults.")
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite an existing config; migrate and keep an existing database.",
)
def setup(
    config_path: Path | None,
    database_url: str | None,
    host: str | None,
    port: int | None,
    lease_seconds: float | None,
    max_attempts: int | None,
    retention_days: float | None,
    sqlite_synchronous: str | None,
    admin_key_name: str,
    non_interactive: bool,
    force: bool,
) -> None:
    """Create server_config.toml and the database, and print the admin API key once."""
    config = resolve_config_path(config_path).absolute()
    if config.exists() and not force:
        raise click.ClickException(
            f"{config} already exists; pass --force to overwrite it "
            "(an existing database and its jobs are kept)"
        )
    previous = _previous(config) if config.exists() else None
    interactive = is_interactive(non_interactive)
    if interactive:
        click.echo(f"Setting up the OpenBeepBoop queue server ({config}).")

    old_server = previous.server if previous else None
    old_queue = previous.queue if previous else None
    url = _ask(
        interactive,
        database_url,
        "Database URL",
        previous.database.url if previous else default_database_url(),
    )
    values: dict[str, Any] = {
        "server": {
            "host": _ask(
                interactive, host, "Host", old_server.host if old_server else DEFAULT_HOST
            ),
            "port": _ask(
                interactive,
                port,
                "Port",
                old_server.port if old_server else DEFAULT_PORT,
                click.IntRange(0, 65535),
            ),
        },
        "database": {"url": url},
        "queue": {
            "lease_seconds": _ask(
                interactive,
                lease_seconds,
                "Lease seconds",
                old_queue.lease_seconds if old_queue else DEFAULT_LEASE_SECONDS,
                click.FloatRange(min=0, min_open=True),
            ),
            "max_attempts": _ask(
                interactive,
                max_attempts,
                "Max attempts per job",
                old_queue.max_attempts if old_queue else DEFAULT_MAX_ATTEMPTS,
                click.IntRange(min=1),
            ),
            "retention_days": _ask(
                interactive,
                retention_days,
                "Days to keep finished jobs",
                old_queue.retention_days if old_queue else DEFAULT_RETENTION_DAYS,
                click.FloatRange(min=0, min_open=True),
            ),
        },
    }
    if previous is not None:
        # Keep settings the wizard does not ask about.
        values["server"] = {**previous.server.model_dump(), **values["server"]}
        values["queue"] = {**previous.queue.model_dump(), **values["queue"]}
        values["openai"] = previous.openai.model_dump()
    if sqlite_path(str(url)) is not None or sqlite_synchronous is not None:
        values["database"]["sqlite_synchronous"] = _ask(
            interactive,
            sqlite_synchronous,
            "SQLite synchronous mode",
            previous.database.sqlite_synchronous if previous else "NORMAL",
            click.Choice(SQLITE_SYNCHRONOUS_MODES, case_sensitive=False),
        )
    settings = parse_settings(values, source="setup", base=Path.cwd())
    url = settings.database.url

    state = inspect_database(url)
    if not state.empty and not force:
        held = f" with {state.jobs} job(s)" if state.jobs is not None else ""
        raise click.ClickException(
            f"the database already has tables{held}; pass --force to keep its data, "
            "migrate it and issue a new admin key"
        )
    database_file = sqlite_path(url)
    if database_file is not None:
        _make_folder(database_file)

    applied = upgrade_to_head(url)
    if state.empty and not applied:
        # Empty when looked at, yet another process migrated it while this one
        # waited for the migration lock: another setup made this database.
        raise click.ClickException(
            "another setup created this database at the same time; nothing was written "
            "here (run setup again with --force to keep it and issue another admin key)"
        )
    if database_file is not None and state.empty:
        # Jobs and key digests are nobody else's business.
        database_file.chmod(0o600)
    key = _issue_admin_key(
        url, settings.database.sqlite_synchronous, admin_key_name, reuse=not state.empty
    )
    write_private_file(config, settings.to_toml())

    click.echo(f"Configuration written to {config}")
    if state.empty:
        click.echo(f"Database created at {display_url(settings.database.url)}")
    else:
        kept = f"{state.jobs} job(s)" if state.jobs is not None else "its data"
        click.echo(
            f"Existing database kept ({kept}) and migrated: {display_url(settings.database.url)}"
        )
    click.echo(f"Admin API Key: {key}")
    click.echo("Store this key now: it is not shown again.", err=True)
    click.echo("Start the server with: openbeepboop-server start", err=True)
