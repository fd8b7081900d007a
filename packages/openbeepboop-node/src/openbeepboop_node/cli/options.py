"""What the commands share: ``--config``, logging from ``-v/-q``, whether prompts can be shown."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from openbeepboop_schemas import escape_control

F = TypeVar("F", bound=Callable[..., Any])

#: The package's own loggers: DEBUG from ``-v`` on.
PACKAGE_LOGGER = "openbeepboop_node"
#: Third-party loggers whose INFO/DEBUG chatter only ``-vv`` shows.
NOISY_LOGGERS = (
    "httpx",
    "httpcore",
    "openai",
    "aiohttp",
    "LiteLLM",
    "LiteLLM Router",
    "LiteLLM Proxy",
    "asyncio",
)
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def config_option(func: F) -> F:
    """``--config PATH`` (default: the user config directory)."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Path of node_config.toml (default: the user config directory).",
    )(func)


def verbosity(verbose: int, quiet: bool) -> int:
    """What ``-v``/``-q`` asked for: -1 quiet, 0 default, 1 (``-v``), 2 (``-vv``)."""
    return -1 if quiet else min(verbose, 2)


class InertFormatter(logging.Formatter):
    """Log lines whose text holds no control character: each one is shown escaped.

    A log line quotes what others chose: a model name a user submitted, an
    error message a backend wrote, a server's answer. A newline there would
    forge a log line and an ANSI sequence act on the terminal tailing the
    log, so the message is escaped as a whole here, for every logger, rather
    than at each call. A traceback keeps its line breaks (they are its
    layout) but each of its lines is escaped and indented: only a record's
    own first line starts at the left margin, so none can be forged.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        """The ``asctime levelname message`` line, the message escaped."""
        return escape_control(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        """The traceback, each of its lines escaped and indented."""
        return _escape_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        """The stack, each of its lines escaped and indented."""
        return _escape_lines(super().formatStack(stack_info))


#: Put before each line of a logged traceback (see :class:`InertFormatter`).
TRACEBACK_INDENT = "  "


def _escape_lines(text: str) -> str:
    return "\n".join(TRACEBACK_INDENT + escape_control(line) for line in text.split("\n"))


def configure_logging(level: int) -> None:
    """Log to stderr: INFO by default, WARNING at -1; DEBUG for ours at 1, for all at 2."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(InertFormatter(LOG_FORMAT, LOG_DATE_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if level < 0 else logging.DEBUG if level > 1 else logging.INFO)
    logging.getLogger(PACKAGE_LOGGER).setLevel(logging.DEBUG if level > 0 else logging.NOTSET)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if level > 1 else logging.WARNING)


def stdin_is_terminal() -> bool:
    """Whether someone can answer a prompt (tests replace this)."""
    return sys.stdin is not None and sys.stdin.isatty()


def is_interactive(non_interactive: bool) -> bool:
    """True when prompts may be shown: no ``--non-interactive`` and a terminal on stdin."""
    return not non_interactive and stdin_is_terminal()
