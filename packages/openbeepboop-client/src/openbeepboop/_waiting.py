"""How to wait for many jobs without hammering the server.

The loop is the same for the sync and async clients, so it lives here as a
plan they both drive: each round long-polls the first :data:`MAX_POLL_IDS` of
the still-unfinished ids with the server-side ``wait`` (the server answers as
soon as one of them finishes, or when ``wait`` runs out) and asks about the
remaining unfinished ids without waiting. Rounds start at most every
:data:`~openbeepboop._constants.MIN_WAIT_ROUND_SECONDS`, so a stream of
finishing jobs is collected in batches, and a server that ignored ``wait``
still could not make the client spin. A watched wait (progress shown) asks
the server to wait at most
:data:`~openbeepboop._constants.WATCHED_WAIT_ROUND_SECONDS` per round, so
what it shows (queued, running on which node) is never long out of date.

A wait can last all night, so a server restart or a short outage in the
middle of it must not end it: :class:`Outage` decides how long a wait keeps
asking a server that stopped answering.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from openbeepboop_schemas import (
    MAX_POLL_IDS,
    MAX_WAIT_SECONDS,
    NOT_FOUND,
    TERMINAL_STATUSES,
    PollEntry,
)

from openbeepboop import _constants, _retry
from openbeepboop._exceptions import APIConnectionError, APIStatusError, JobTimeoutError
from openbeepboop._servers import FAILOVER_STATUSES

#: Statuses that never change again: the terminal ones and "no such job".
FINAL_STATUSES = frozenset({*(status.value for status in TERMINAL_STATUSES), NOT_FOUND})


def is_final(entry: PollEntry) -> bool:
    """True when polling this job again can never tell anything new.

    An entry whose result the server left out of a large answer
    (``result_omitted``) is not: the next round asks again, with fewer ids.
    """
    return entry.status in FINAL_STATUSES and not entry.result_omitted


@dataclass(frozen=True)
class PollCall:
    """One poll request of a round: which ids, and the server-side wait (None: none)."""

    ids: list[str]
    wait: float | None


class WaitPlan:
    """The state of one ``wait(ids)``: what is known, what is still pending, the deadline."""

    def __init__(
        self,
        ids: Sequence[str],
        timeout: float | None,
        clock: Callable[[], float] = time.monotonic,
        *,
        longest_wait: float = MAX_WAIT_SECONDS,
        on_final: Callable[[PollEntry], None] | None = None,
    ) -> None:
        self._order = list(ids)
        self._on_final = on_final
        self._longest_wait = longest_wait
        self._clock = clock
        self._timeout = timeout
        self._deadline = None if timeout is None else clock() + timeout
        self._entries: dict[str, PollEntry] = {}
        self.pending: list[str] = list(dict.fromkeys(ids))
        self.total = len(self.pending)
        self.tally: Counter[str] = Counter()
        self._rounds = 0
        self._round_started = 0.0

    @property
    def deadline(self) -> float | None:
        """When the wait's ``timeout`` runs out (on its clock); None without one."""
        return self._deadline

    @property
    def done(self) -> bool:
        """True once every id is final."""
        return not self.pending

    def next_round(self) -> list[PollCall]:
        """The polls of the next round; raises JobTimeoutError when time is up.

        The first round always runs, even with ``timeout=0``, so a wait that
        cannot last still reports where every job stands.
        """
        wait: float = self._longest_wait
        if self._deadline is not None:
            remaining = self._deadline - self._clock()
            if remaining <= 0 and self._rounds > 0:
                raise JobTimeoutError(self._timeout or 0.0, self.pending, self.entries())
            wait = max(0.0, min(wait, remaining))
        self._rounds += 1
        self._round_started = self._clock()
        chunks = [
            self.pending[start : start + MAX_POLL_IDS]
            for start in range(0, len(self.pending), MAX_POLL_IDS)
        ]
        return [
            PollCall(ids=chunk, wait=(wait or None) if index == 0 else None)
            for index, chunk in enumerate(chunks)
        ]

    def record(self, ids: Sequence[str], entries: Sequence[PollEntry]) -> int:
        """Take in one poll's answer; returns how many jobs became final.

        With ``on_final`` a final entry is handed over instead of kept, so a
        wait for many large answers holds one poll's worth of them, not all.
        """
        finished = 0
        pending = set(self.pending)
        for job_id, entry in zip(ids, entries, strict=True):
            final = job_id in pending and is_final(entry)
            if final and self._on_final is not None:
                self._entries.pop(job_id, None)
                self._on_final(entry)
            else:
                self._entries[job_id] = entry
            if final:
                pending.discard(job_id)
                finished += 1
                self.tally[entry.status] += 1
        if finished:
            self.pending = [job_id for job_id in self.pending if job_id in pending]
        return finished

    def pause(self) -> float:
        """Seconds to sleep before the next round (0 when done or past the deadline)."""
        if self.done:
            return 0.0
        pause = self._round_started + _constants.MIN_WAIT_ROUND_SECONDS - self._clock()
        if self._deadline is not None:
            pause = min(pause, self._deadline - self._clock())
        return max(0.0, pause)

    def pending_entries(self) -> list[PollEntry]:
        """The latest entry of every unfinished job seen so far, in the order asked."""
        return [self._entries[job_id] for job_id in self.pending if job_id in self._entries]

    def entries(self) -> list[PollEntry]:
        """The latest entry of every id asked about, in the order asked (known ones only).

        With ``on_final``, only of the ids not handed over: those still unfinished.
        """
        return [self._entries[job_id] for job_id in self._order if job_id in self._entries]


def is_unreachable(exc: BaseException) -> bool:
    """True for a failure a server restart explains: refused, reset, timeout, 502/503/504."""
    if isinstance(exc, APIConnectionError):  # APITimeoutError is one too
        return True
    return isinstance(exc, APIStatusError) and exc.status_code in FAILOVER_STATUSES


class Outage:
    """How long a wait keeps asking a server that stopped answering.

    A single request gives up after ``max_retries`` (about a second), which is
    right for a command that asks once and wrong for a wait that may last all
    night across a server restart. A wait therefore tries a failed round again,
    with backoff, until its own deadline, or until
    :data:`~openbeepboop._constants.WAIT_OUTAGE_SECONDS` after the server
    stopped answering when it has none. Other failures (a rejected key, a
    malformed answer) end the wait at once, as before.
    """

    def __init__(
        self,
        deadline: float | None,
        clock: Callable[[], float] = time.monotonic,
        *,
        limit: float | None = None,
    ) -> None:
        self._deadline = deadline
        self._clock = clock
        self._limit = _constants.WAIT_OUTAGE_SECONDS if limit is None else limit
        self._since: float | None = None
        self._tries = 0

    @property
    def began(self) -> bool:
        """True right after the first failure of an outage: the moment to tell the user."""
        return self._since is not None and self._tries == 1

    def retry_in(self, exc: BaseException) -> float | None:
        """Seconds to sleep before trying again after ``exc``; None: give up, raise it."""
        if not is_unreachable(exc):
            return None
        now = self._clock()
        if self._since is None:
            self._since = now
        give_up = self._deadline if self._deadline is not None else self._since + self._limit
        # The backoff is capped long before this exponent, which only must not overflow.
        delay = _retry.backoff_seconds(min(self._tries, 32))
        if now + delay >= give_up:
            return None
        self._tries += 1
        return delay

    def ride_out(self, exc: BaseException, notify: Callable[[str], None]) -> float:
        """Seconds to sleep before trying again after ``exc``, telling ``notify`` once
        per outage; raises ``exc`` when the wait gives up (:meth:`retry_in`)."""
        delay = self.retry_in(exc)
        if delay is None:
            raise exc
        if self.began:
            notify(self.describe(exc))
        return delay

    def over(self) -> None:
        """The server answered: a later failure starts a new outage (and a new notice)."""
        self._since = None
        self._tries = 0

    def describe(self, exc: BaseException) -> str:
        """The one line that says the server is unreachable and the wait keeps trying."""
        if self._deadline is not None:
            until = "until the wait's timeout"
        else:
            until = f"for up to {self._limit:g}s"
        return f"the server does not answer ({exc}); still waiting, trying again {until}"
