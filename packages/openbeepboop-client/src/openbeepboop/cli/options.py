"""What every command shares: the ``--config``, ``--json`` and ``--timeout`` options, the client.

Also where a command learns whether a person is watching (stdout or stderr is
a terminal): the one place tests replace to play a terminal.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from openbeepboop._client import Client
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
