"""What every command shares: the ``--config``, ``--json`` and ``--timeout`` options, the client.

Also where a command learns whether a person is watching (stdout or stderr is
a terminal): the one place tests replace to play a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from openbeepboop._client import Client
from openbeepboop._exceptions import InvalidRequestError
from openbeepboop._resources.chat import check_idempotency_key
from openbeepboop.cli.no_answer import watch

#: An input file the command reads (an id map, a JSONL file): it must exist.
existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)
#: A file the command writes.
output_file = click.Path(dir_okay=False, writable=True, path_type=Path)

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="client_config.toml to use (default: the user config directory).",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text."
)
text_option = click.option(
    "--text",
    "as_text",
    is_flag=True,
    help="Print only the answer text, even when stdout is not a terminal.",
)
progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="Keep a status line on stderr while waiting (default: only when stderr is a terminal).",
)
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="With waiting: stop after this many seconds, exit 124 (the jobs stay on the server).",
)


def make_client(config_path: Path | None) -> Client:
    """A client from --config, the environment and the default config file."""
    return watch(Client(config_path=config_path))


def stderr_is_terminal() -> bool:
    """True when a progress bar would be seen by a person."""
    return sys.stderr.isatty()


def stdout_is_terminal() -> bool:
    """True when a person reads stdout (human output); False for a pipe or a file (JSON)."""
    return sys.stdout.isatty()


def idempotency_key_option(what: str, *, bulk: bool = False) -> Callable[[Any], Any]:
    """``--idempotency-key KEY``: running the command again with it never does ``what`` twice.

    A key the server would refuse is a usage error (exit 2) before anything
    is sent. ``bulk``: the command derives keys from it (a suffix each), so
    it may be 240 characters, not 255.
    """

    def checked(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check_idempotency_key(value, bulk=bulk)
        except InvalidRequestError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return click.option(
        "--idempotency-key",
        default=None,
        callback=checked,
        help=f"Running this again with the same key (and the same input) never {what} "
        "(default: a new key each run).",
    )
