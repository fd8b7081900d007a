"""Turn the library's exceptions into the CLI's one-line errors."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import httpx
from openbeepboop_schemas import PollEntry

from openbeepboop._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    AuthenticationError,
    OpenBeepBoopError,
    PermissionDeniedError,
)

#: The server's code for a key whose role may not call an endpoint (other 403s
#: are refusals within the role: a priority ceiling, a model outside the key's scope).
INSUFFICIENT_ROLE = "insufficient_role"


def describe(exc: BaseException) -> str:
    """One human line for an expected failure."""
    if isinstance(exc, APITimeoutError):
        text = f"{exc}; the server may be overloaded (retry, or raise the timeout)"
    elif isinstance(exc, APIConnectionError):
        if isinstance(exc.__cause__, httpx.ConnectError):
            text = f"{exc} (is the server running, and is server_url right?)"
        else:
            text = f"{exc} (the server or a proxy before it cut the answer short; retry)"
    elif isinstance(exc, AuthenticationError):
        text = (
            f"the server rejected the API key ({exc}); check api_key in "
            "client_config.toml or OPENBEEPBOOP_API_KEY"
        )
    elif isinstance(exc, PermissionDeniedError) and exc.code == INSUFFICIENT_ROLE:
        text = f"this API key may not do that ({exc}); use a USER or ADMIN key"
    elif isinstance(exc, APIResponseValidationError):
        text = f"{exc} (is server_url the address of an OpenBeepBoop queue server?)"
    elif isinstance(exc, OSError):
        text = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _clause(exc: BaseException) -> str:
    """``exc``'s message as a clause that more can follow (no full stop of its own)."""
    return str(exc).rstrip().rstrip(".")


def lost_submit(exc: APIError, idempotency_key: str, config_path: Path | None = None) -> str:
    """The one line of a submit whose answer was lost (``exc.answer_lost``).

    The job may be queued although no id came back: the line says how to
    look for it and how to submit again without queuing it twice.
    """
    config = f" --config {shlex.quote(str(config_path))}" if config_path else ""
    text = (
        f"{_clause(exc)}; the job may already be queued (look with: openbeepboop-client list "
        f"--limit 5{config}). Re-run the same command with --idempotency-key "
        f"{shlex.quote(idempotency_key)}: a job already queued under that key is "
        "answered again, never queued twice"
    )
    return " ".join(text.split())


def lost_batch(exc: APIError, idempotency_key: str) -> str:
    """The one line of a ``batch create`` whose upload's or create's answer was lost.

    The batch may have started although no id came back; the same command
    with the key this run used makes neither the file nor the batch twice.
    """
    text = (
        f"{_clause(exc)}; the batch may already be started. Re-run the same command with "
        f"--idempotency-key {shlex.quote(idempotency_key)}: a file or batch already made "
        "under that key is answered again, never made twice"
    )
    return " ".join(text.split())


#: Exit status of a wait that ran out (``--timeout``), as ``timeout(1)`` uses: the
#: jobs are unharmed, only unfinished, so a script can tell this from a failure (1).
EXIT_WAIT_TIMEOUT = 124
#: Exit status of a wait stopped with Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


class WaitTimedOut(click.ClickException):
    """``--timeout`` ran out before every job finished: one line saying where they stand.

    ``entries`` are the latest view of every job waited for, for stdout.
    """

    exit_code = EXIT_WAIT_TIMEOUT

    def __init__(self, message: str, entries: Sequence[PollEntry] = ()) -> None:
        super().__init__(message)
        self.entries = list(entries)


class WaitInterrupted(click.ClickException):
    """Ctrl-C stopped a wait: one line saying that the jobs are untouched."""

    exit_code = EXIT_INTERRUPTED


class SubmitInterrupted(click.ClickException):
    """Ctrl-C stopped a bulk submit: one line saying how to finish it without duplicates."""

    exit_code = EXIT_INTERRUPTED


class BadArgument(click.ClickException):
    """An argument refused before any request is sent: one line, exit 2 (a usage error)."""

    exit_code = 2


class MissingWithoutTerminal(click.ClickException):
    """Values a wizard would ask for, missing where it may not ask: one line, exit 2."""

    exit_code = 2

    def __init__(self, flags: Sequence[str]) -> None:
        verb, them = ("is", "it as a flag") if len(flags) == 1 else ("are", "them as flags")
        super().__init__(
            f"{join_words(flags)} {verb} required without a terminal "
            f"(pass {them}, or run setup in a terminal)"
        )


def join_words(words: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"


class GuardedGroup(click.Group):
    """A click group whose commands' expected failures become ``Error: ...`` lines."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; library and file errors exit 1 with one line on stderr."""
        try:
            return super().invoke(ctx)
        except (OpenBeepBoopError, OSError) as exc:
            raise click.ClickException(describe(exc)) from None
