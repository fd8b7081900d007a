"""How the command line reports an expected failure: one line on stderr, never a traceback."""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Any

import click

#: Exit status of a value missing where setup cannot prompt (a usage error, as click's).
EXIT_USAGE = 2


class CommandError(click.ClickException):
    """An expected failure (bad config, unreachable server, refused key): exit status 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"openbeepboop-node: error: {self.format_message()}", err=True)


class MissingWithoutTerminal(click.ClickException):
    """Required values that no flag or existing config gives, and no terminal to ask.

    Shown as ``Error: --server-url and --api-key are required without a
    terminal (...)``, exit status 2.
    """

    exit_code = EXIT_USAGE

    def __init__(self, flags: Sequence[str]) -> None:
        self.flags = list(flags)
        verb, them = ("is", "it as a flag") if len(self.flags) == 1 else ("are", "them as flags")
        super().__init__(
            f"{join_flags(self.flags)} {verb} required without a terminal "
            f"(pass {them}, or run setup in a terminal)"
        )


def join_flags(flags: Sequence[str]) -> str:
    """``--a``, ``--a and --b``, ``--a, --b and --c``."""
    if len(flags) <= 1:
        return "".join(flags)
    return f"{', '.join(flags[:-1])} and {flags[-1]}"
