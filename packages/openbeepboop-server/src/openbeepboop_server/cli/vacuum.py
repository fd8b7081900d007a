"""``openbeepboop-server vacuum``: give the space of deleted rows back to the file system.

The server already does this bit by bit on databases it created (SQLite
``auto_vacuum = INCREMENTAL``: after each purge the free pages are cut off
the file). This command is for the rest: a SQLite file created by an older
version (it is rewritten, and converted so that the server shrinks it from
then on), a file that was never purged, or PostgreSQL tables
(``VACUUM (ANALYZE)``; ``--full`` for ``VACUUM FULL``).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import click

from openbeepboop_server.cli.options import config_option, open_database, read_settings
from openbeepboop_server.config import display_url, sqlite_path


def _size(path: Path | None) -> int | None:
    if path is None:
        return None
    # The WAL holds pages not yet copied back; both are the database's size on disk.
    files = [path, path.with_name(path.name + "-wal")]
    return sum(os.stat(file).st_size for file in files if file.exists())


@click.command()
@config_option
@click.option(
    "--full",
    is_flag=True,
    help="PostgreSQL: VACUUM FULL (returns space to the OS, locks each table while it runs).",
)
def vacuum(config_path: Path | None, full: bool) -> None:
    """Compact the database (best with the server stopped: it holds the write lock throughout)."""
    settings = read_settings(config_path)
    url = settings.database.url
    path = sqlite_path(url)
    before = _size(path)
    with open_database(settings) as db:
        try:
            db.vacuum(full=full)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_FULL":
                raise
            # VACUUM writes a whole new copy before it drops the old one.
            raise click.ClickException(
                f"not enough free disk space to vacuum {display_url(url)}: it writes a new "
                f"copy of the database first, so it needs free space about the size of the "
                f"file ({before or 0:,} bytes) in its folder and in the temporary folder"
            ) from None
    after = _size(path)
    if before is not None and after is not None:
        click.echo(f"Vacuumed {display_url(url)}: {before:,} -> {after:,} bytes")
    else:
        click.echo(f"Vacuumed {display_url(url)}")
