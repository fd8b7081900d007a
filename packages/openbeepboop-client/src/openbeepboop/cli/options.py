"""What every command shares: the ``--config`` option, the client, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import click
from openbeepboop_schemas import PollEntry

from openbeepboop._client import Client

F = TypeVar("F", bound=Callable[..., object])

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
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="With waiting: give up after this many seconds (jobs keep running).",
)


def make_client(config_path: Path | None) -> Client:
    """A client from --config, the environment and the default config file."""
    return Client(config_path=config_path)


def entry_json(entry: PollEntry) -> dict[str, object]:
    """A poll entry as the server sent it (fields it did not send stay out)."""
    return entry.model_dump(mode="json", exclude_unset=True)


def echo_json(data: object) -> None:
    """Pretty JSON on stdout, the way ``poll`` prints it."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def echo_entries(entries: Sequence[PollEntry]) -> None:
    """The JSON array of poll entries."""
    echo_json([entry_json(entry) for entry in entries])


def stderr_is_terminal() -> bool:
    """True when a progress bar would be seen by a person."""
    return sys.stderr.isatty()
