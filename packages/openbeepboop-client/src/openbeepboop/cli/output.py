"""How commands print: poll entries and other answers as JSON on stdout, warnings on stderr."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

import click
from openbeepboop_schemas import JobWarning, PollEntry

from openbeepboop._submit_warnings import distinct


def entry_json(entry: PollEntry) -> dict[str, object]:
    """A poll entry as the server sent it (fields it did not send stay out)."""
    return entry.model_dump(mode="json", exclude_unset=True)


#: Characters ``json.dumps`` leaves raw with ``ensure_ascii=False`` that a
#: terminal may act on or show misleadingly: DEL and the C1 controls (a UTF-8
#: terminal may take U+009B as the start of an escape sequence), the line and
#: paragraph separators, and the bidirectional overrides and isolates that
#: reorder what is shown. JSON's own ``\\uXXXX`` escape keeps the parsed text
#: exactly what the server sent.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _json_escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def echo_json(data: object) -> None:
    """Pretty JSON on stdout, the way ``poll`` prints it.

    Non-ASCII text stays readable (``ensure_ascii=False``), except the
    characters of :data:`_JSON_UNSAFE`, which are written as JSON escapes:
    a result is text a backend chose, and it reaches the user's terminal.
    """
    click.echo(_JSON_UNSAFE.sub(_json_escaped, json.dumps(data, indent=2, ensure_ascii=False)))


def echo_entries(entries: Sequence[PollEntry]) -> None:
    """The JSON array of poll entries."""
    echo_json([entry_json(entry) for entry in entries])


def echo_warnings(warnings: Iterable[JobWarning]) -> None:
    """One ``Warning: ...`` line on stderr per distinct warning (stdout stays the contract's)."""
    for warning in distinct(warnings):
        click.echo(f"Warning: {warning.message}", err=True)
