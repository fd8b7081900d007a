"""What every command shares: ``--config``, logging set-up, reading the settings."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from openbeepboop_server.config import CONFIG_ENV, Settings, default_config_path, load_settings

F = TypeVar("F", bound=Callable[..., Any])

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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


def configure_logging(*, default: int = logging.WARNING) -> None:
    """Set up logging: ``default`` level; ``-v`` INFO, ``-vv`` DEBUG, ``-q`` WARNING."""
    ctx = click.get_current_context(silent=True)
    verbosity = ctx.find_root().meta.get("verbosity", 0) if ctx is not None else 0
    if verbosity < 0:
        level = logging.WARNING
    elif verbosity == 0:
        level = default
    elif verbosity == 1:
        level = min(default, logging.INFO)
    else:
        level = logging.DEBUG
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    if level > logging.DEBUG:
        # Alembic narrates every connection at INFO; only -vv wants that.
        logging.getLogger("alembic").setLevel(logging.WARNING)


def is_interactive(non_interactive: bool) -> bool:
    """True when prompts may be shown: a terminal on stdin and no ``--non-interactive``."""
    return not non_interactive and sys.stdin is not None and sys.stdin.isatty()
