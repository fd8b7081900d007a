"""How commands print: poll entries and other answers as JSON on stdout, warnings on stderr."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import click
from openbeepboop_schemas import JobWarning, PollEntry

from openbeepboop._submit_warnings import distinct


def entry_json(entry: PollEntry) -> dict[str, object]:
    """A poll entry as the server sent it (fields it did not send stay out)."""
    return entry.model_dump(mode="json", exclude_unset=True)


def echo_json(data: object) -> None:
    """Pretty JSON on stdout, the way ``poll`` prints it."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def echo_entries(entries: Sequence[PollEntry]) -> None:
    """The JSON array of poll entries."""
    echo_json([entry_json(entry) for entry in entries])


def echo_warnings(warnings: Iterable[JobWarning]) -> None:
    """One ``Warning: ...`` line on stderr per distinct warning (stdout stays the contract's)."""
    for warning in distinct(warnings):
        click.echo(f"Warning: {warning.message}", err=True)
