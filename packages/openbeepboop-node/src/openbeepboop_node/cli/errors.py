"""How the command line reports an expected failure: one line on stderr, never a traceback.

Exit statuses (docs/node.md, "Exit status"), distinct so cron and scripts can
tell why a run did not do its work:

=====  ===============================================================
0      done (``batch``: drained what it could serve)
1      any other failure (a spool that cannot be written, a server that
       refuses a request as invalid)
2      usage: a wrong flag, a value missing where setup cannot prompt
3      the queue server is unreachable (or results could not be delivered)
4      the server refused the node key (401) or its role (403)
5      a model's backend is unreachable: its jobs were handed back
6      the node's configuration is missing or invalid (or its server_url
       is no OpenBeepBoop server)
130    interrupted by a second signal
=====  ===============================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Any

import click

from openbeepboop_node.checks import FailureKind
from openbeepboop_node.exceptions import (
    BackendUnreachableError,
    ConfigError,
    KeyRejectedError,
    NotAQueueServerError,
    ServerUnavailableError,
)

EXIT_FAILURE = 1
#: Exit status of a value missing where setup cannot prompt (a usage error, as click's).
EXIT_USAGE = 2
EXIT_SERVER_UNREACHABLE = 3
EXIT_KEY_REFUSED = 4
EXIT_BACKEND_UNREACHABLE = 5
EXIT_CONFIG = 6

#: The exit status of each kind of failed check.
EXIT_BY_KIND: dict[FailureKind, int] = {
    "config": EXIT_CONFIG,
    "server": EXIT_SERVER_UNREACHABLE,
    "key": EXIT_KEY_REFUSED,
    "backend": EXIT_BACKEND_UNREACHABLE,
}


class CommandError(click.ClickException):
    """An expected failure, as one line on stderr; exit status ``exit_code`` (default 1)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = exit_code

    @property
    def exit_code(self) -> int:  # click reads it when the command fails
        """The exit status the failure ends the command with."""
        return self.status

    @exit_code.setter
    def exit_code(self, value: int) -> None:
        self.status = value

    @classmethod
    def from_error(cls, exc: Exception) -> CommandError:
        """The command error for one of the node's own exceptions, with its exit status."""
        return cls(str(exc), exit_status(exc))

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"openbeepboop-node: error: {self.format_message()}", err=True)


def exit_status(exc: Exception) -> int:
    """The exit status that says what kind of failure ``exc`` is."""
    if isinstance(exc, (ConfigError, NotAQueueServerError)):
        return EXIT_CONFIG
    if isinstance(exc, ServerUnavailableError):
        return EXIT_SERVER_UNREACHABLE
    if isinstance(exc, KeyRejectedError):
        return EXIT_KEY_REFUSED
    if isinstance(exc, BackendUnreachableError):
        return EXIT_BACKEND_UNREACHABLE
    return EXIT_FAILURE


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
