"""How ``submit --wait`` and ``poll --wait`` wait: a status line, a timeout, an honest ending.

While stderr is a terminal the wait keeps a :class:`StatusLine` there. When
``--timeout`` runs out (exit 124) or Ctrl-C stops it (exit 130), the one
error line names the unfinished jobs, says truthfully where they stand (a
``QUEUED`` job is not running anywhere: it waits on the server for a node),
and gives the command that collects them (exit statuses in
:mod:`openbeepboop.cli.errors`).
"""

from __future__ import annotations

from collections.abc import Sequence

import click
from openbeepboop_schemas import JobStatus, PollEntry

from openbeepboop._client import Client
from openbeepboop._exceptions import JobTimeoutError
from openbeepboop._progress import NoProgress
from openbeepboop.cli.errors import WaitInterrupted, WaitTimedOut
from openbeepboop.cli.no_answer import paused
from openbeepboop.cli.options import stderr_is_terminal
from openbeepboop.cli.status_line import StatusLine

#: Job ids spelled out in the "collect later" command; the rest are on stdout.
MAX_IDS_NAMED = 5


class Unwatched(NoProgress):
    """No status line (stderr is no terminal), yet an outage is still said, once.

    A script's log then shows why a wait seems stuck: one ``Warning:`` line
    when the server stops answering, and nothing else.
    """

    def unreachable(self, message: str) -> None:
        """One ``Warning: ...`` line on stderr."""
        click.echo(f"Warning: {message} (Ctrl-C stops waiting; nothing is cancelled)", err=True)


def _what_happens(statuses: dict[str, int], count: int, attempts: int = 0) -> str:
    queued, running = JobStatus.QUEUED.value, JobStatus.PROCESSING.value
    if count == 1:
        if running in statuses:
            return "a node is working on it, and the server keeps its result"
        if queued in statuses and attempts:
            return (
                f"attempt {attempts} did not succeed, and it stays queued on the server "
                "to be retried when a node takes it"
            )
        if queued in statuses:
            return "no node has taken it, and it stays queued on the server until one does"
        return "it stays on the server"
    if set(statuses) == {running}:
        return "nodes are working on them, and the server keeps their results"
    if queued in statuses:
        return "they stay on the server (queued ones until a node takes them)"
    return "they stay on the server"


def collect_later(ids: Sequence[str]) -> str:
    """``Collect it later with: openbeepboop-client poll ID ...``."""
    named = " ".join(ids[:MAX_IDS_NAMED])
    rest = len(ids) - MAX_IDS_NAMED
    more = f" ... ({rest} more; every id is in the JSON on stdout)" if rest > 0 else ""
    them = "it" if len(ids) == 1 else "them"
    return f"Collect {them} later with: openbeepboop-client poll {named}{more}"


def where_they_stand(exc: JobTimeoutError) -> str:
    """``job job-1 is still QUEUED after waiting 3s: no node has taken it, ...``."""
    attempts = max((e.attempts for e in exc.entries if e.id in exc.pending), default=0)
    happens = _what_happens(exc.statuses(), len(exc.pending), attempts)
    return f"{exc.standing()} after waiting {exc.timeout:g}s: {happens}"


def timed_out(exc: JobTimeoutError) -> WaitTimedOut:
    """The one-line ending of a wait whose ``--timeout`` ran out."""
    return WaitTimedOut(f"{where_they_stand(exc)}. {collect_later(exc.pending)}", exc.entries)


def wait_for(
    client: Client,
    ids: Sequence[str],
    *,
    timeout: float | None,
    model: str | None = None,
    show: bool | None = None,
) -> list[PollEntry]:
    """Wait until every job of ``ids`` is finished; their entries, in order.

    ``show``: keep the status line on stderr (None: only when stderr is a
    terminal, so a script's stderr stays free of progress). Raises
    :class:`WaitTimedOut` (exit 124) when ``timeout`` runs out and
    :class:`WaitInterrupted` (exit 130) on Ctrl-C, each with its one line.
    """
    if show is None:
        show = stderr_is_terminal()
    line = StatusLine(ids, model=model, timeout=timeout) if show else Unwatched()
    try:
        with paused(client):
            return client.jobs.wait(ids, timeout=timeout, progress=line)
    except JobTimeoutError as exc:
        raise timed_out(exc) from None
    except KeyboardInterrupt:
        unique = list(dict.fromkeys(ids))
        raise WaitInterrupted(
            f"stopped waiting; nothing was cancelled. {collect_later(unique)}"
        ) from None
