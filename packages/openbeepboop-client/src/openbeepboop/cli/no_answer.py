"""One line on stderr when a command's request has had no answer for a while.

A request to a server that accepts the connection and never answers (a hung
host, a black-holing firewall, a proxy dripping bytes) takes one timeout per
try, 60 s by default, three tries: three minutes of silence look like a hung
command. So once a try has ended without an answer after the command waited
at least :data:`NOTICE_AFTER_SECONDS`, and another try follows, the command
says so once, on stderr: which server, and for how long it keeps trying.
A refused connection fails in a second or two and is said by the error
alone; stdout never carries the notice. Waits say their own outage line
(:mod:`openbeepboop.cli.waiting`) and pause this one (:func:`paused`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from openbeepboop._base_client import NoAnswer
from openbeepboop._client import Client

#: A try that ends without an answer after the command has waited this long is said.
NOTICE_AFTER_SECONDS = 5.0


def duration(seconds: float) -> str:
    """``45s``, ``2m05s``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    return f"{whole // 60}m{whole % 60:02d}s"


def notice_line(news: NoAnswer) -> str:
    """``Warning: no answer yet from the server at URL after 1m00s (...); trying ...``."""
    tries = "1 more try" if news.tries_left == 1 else f"{news.tries_left} more tries"
    each = f" of up to {news.try_seconds:g}s each" if news.try_seconds else ""
    return (
        f"Warning: no answer yet from the server at {news.server} after "
        f"{duration(news.waited)} ({news.reason}); trying again for at most "
        f"{duration(news.within)} more ({tries}{each}; Ctrl-C stops)"
    )


class NoAnswerNotice:
    """Says :func:`notice_line` once per command, when a slow try got no answer."""

    def __init__(self) -> None:
        self.said = False
        self.paused = False

    def __call__(self, news: NoAnswer) -> None:
        """Called by the client for each try that ended without an answer."""
        if self.said or self.paused or news.waited < NOTICE_AFTER_SECONDS:
            return
        self.said = True
        click.echo(notice_line(news), err=True)


def watch(client: Client) -> Client:
    """``client``, set to say once when a try of its requests goes unanswered for a while."""
    client._on_no_answer = NoAnswerNotice()
    return client


@contextmanager
def paused(client: Client) -> Iterator[None]:
    """No notice while a wait runs: it has its own line for a server that stopped answering."""
    notice = client._on_no_answer
    if not isinstance(notice, NoAnswerNotice):
        yield
        return
    notice.paused = True
    try:
        yield
    finally:
        notice.paused = False
