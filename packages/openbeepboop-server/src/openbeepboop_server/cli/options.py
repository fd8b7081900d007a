"""What every command shares: ``--config``, reading the settings, opening the
database, logging set-up, the terminal check, and how tables and times are shown."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import click

from openbeepboop_server.config import CONFIG_ENV, Settings, default_config_path, load_settings
from openbeepboop_server.db.database import Database, check_sqlite_location
from openbeepboop_server.db.migrate import ensure_current

F = TypeVar("F", bound=Callable[..., Any])

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The package's own loggers, raised to DEBUG by ``-v``.
PACKAGE_LOGGER = "openbeepboop_server"
#: Third-party loggers kept at WARNING until ``-vv`` (Alembic narrates every connection at INFO).
QUIET_THIRD_PARTY_LOGGERS = ("alembic",)


def config_option(function: F) -> F:
    """``--config PATH`` (default: the user config dir, or ``$OPENBEEPBOOP_SERVER_CONFIG``)."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"server_config.toml to use (default: {default_config_path()}; env {CONFIG_ENV}).",
    )(function)


def resolve_config_path(config_path: Path | None) -> Path:
    """The ``--config`` value, or the default location."""
    return (config_path or default_config_path()).expanduser()


def read_settings(config_path: Path | None) -> Settings:
    """The validated settings from ``--config`` (or the default file)."""
    return load_settings(resolve_config_path(config_path))


@contextmanager
def open_database(settings: Settings) -> Iterator[Database]:
    """The configured database, checked to be at this code's schema; disposed after."""
    check_sqlite_location(settings.database.url)
    db = Database.connect(
        settings.database.url, sqlite_synchronous=settings.database.sqlite_synchronous
    )
    try:
        ensure_current(db)
        yield db
    finally:
        db.dispose()


def configure_logging(verbosity: int, *, default: int = logging.WARNING) -> None:
    """Logging for one command: -1 (``-q``) WARNING; 0 ``default``; 1 (``-v``) also DEBUG
    for this package's loggers; 2 (``-vv``) DEBUG for every library too."""
    if verbosity < 0:
        level = logging.WARNING
    elif verbosity >= 2:
        level = logging.DEBUG
    else:
        level = default
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    logging.getLogger(PACKAGE_LOGGER).setLevel(logging.DEBUG if verbosity == 1 else logging.NOTSET)
    for name in QUIET_THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbosity >= 2 else logging.WARNING)


def is_interactive(non_interactive: bool) -> bool:
    """True when prompts may be shown: a terminal on stdin and no ``--non-interactive``."""
    return not non_interactive and sys.stdin is not None and sys.stdin.isatty()


def format_time(timestamp: float | None) -> str:
    """A UTC timestamp as ``YYYY-MM-DD HH:MM:SSZ`` (``-`` for none).

    Any stored number is shown, never an error: a listing must not fail on
    one row (a database written by an older version may hold an expiry past
    the year 9999), so an instant no date can show is named as such.
    """
    if timestamp is None:
        return "-"
    try:
        when = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        if math.isnan(timestamp):
            return "not a time"
        return "after 9999-12-31" if timestamp > 0 else "before 0001-01-01"
    return f"{when.year:04d}-{when:%m-%d %H:%M:%S}Z"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart, under a header line."""
    widths = [
        max(len(header), *(len(row[i]) for row in rows)) if rows else len(header)
        for i, header in enumerate(headers)
    ]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    ]
    return "\n".join(lines)
