"""The status line a waiting command keeps on stderr: what it waits for, and for how long.

``submit --wait`` and ``poll --wait`` can wait minutes for a job no node has
taken yet; a silent terminal looks hung. While stderr is a terminal they
keep one line there, rewritten in place every second and after every poll::

    Waiting for job-5f0c (llama3): QUEUED, no node has taken it yet · 12s of 60s
    Waiting for job-5f0c (llama3): PROCESSING on gpu-box-1, attempt 1 · 14s of 60s
    Waiting for 5 jobs (llama3): 3 queued, 1 running, 1 finished · 1m05s

and clear it when the wait ends, so that what follows (an error line, or
nothing) is not mixed with it. It is a :class:`~openbeepboop._progress.Progress`,
the same hook the library's progress bar uses.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TextIO

from openbeepboop_schemas import JobStatus, PollEntry

from openbeepboop._progress import queued_and_running

#: Seconds between redraws while no poll answers (the elapsed time keeps moving).
TICK_SECONDS = 1.0
#: Models named in the line before it says "N models" instead.
MAX_MODELS_NAMED = 2
#: Rewrite the line from its start and erase what the previous one left after it.
_REWRITE = "\r\x1b[K"


def elapsed(seconds: float) -> str:
    """``12s``, ``3m05s``, ``1h02m``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def one_job_status(entry: PollEntry) -> str:
    """Where one unfinished job stands, in words."""
    if entry.status == JobStatus.PROCESSING.value:
        # A server older than node_id in poll entries does not say where it runs.
        where = f" on {entry.node_id}" if entry.node_id else ""
        return f"PROCESSING{where}, attempt {max(entry.attempts, 1)}"
    if entry.status == JobStatus.QUEUED.value:
        if entry.attempts:
            return f"QUEUED, to be retried after attempt {entry.attempts}"
        return "QUEUED, no node has taken it yet"
    return entry.status


def _models(models: Sequence[str]) -> str:
    distinct = sorted(set(models))
    if not distinct:
        return ""
    if len(distinct) > MAX_MODELS_NAMED:
        return f" ({len(distinct)} models)"
    return f" ({', '.join(distinct)})"


def describe_wait(
    ids: Sequence[str], model: str | None, finished: int, pending: Sequence[PollEntry]
) -> str:
    """What a wait for ``ids`` is waiting for, given the unfinished jobs' latest entries."""
    known = [entry.model for entry in pending if entry.model]
    models = _models(known or ([model] if model else []))
    if len(ids) == 1:
        status = one_job_status(pending[0]) if pending else "asking the server"
        return f"{ids[0]}{models}: {status}"
    queued, running = queued_and_running(pending)
    parts = [f"{queued} queued", f"{running} running", f"{finished} finished"]
    return f"{len(ids)} jobs{models}: {', '.join(parts)}"


class StatusLine:
    """One line on ``stream`` (stderr) saying what a wait waits for; redrawn every second."""

    def __init__(
        self,
        ids: Sequence[str],
        *,
        model: str | None = None,
        timeout: float | None = None,
        stream: TextIO | None = None,
        tick: float = TICK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ids = list(dict.fromkeys(ids))
        self._model = model
        self._timeout = timeout
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._started = clock()
        self._finished = 0
        self._pending: Sequence[PollEntry] = ()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._drawn = False
        self.draw()
        self._ticker = threading.Thread(
            target=self._tick, args=(tick,), name="status-line", daemon=True
        )
        self._ticker.start()

    def text(self) -> str:
        """The line as it would be drawn now."""
        what = describe_wait(self._ids, self._model, self._finished, self._pending)
        waited = elapsed(self._clock() - self._started)
        limit = "" if self._timeout is None else f" of {self._timeout:g}s"
        return f"Waiting for {what} · {waited}{limit}"

    def draw(self) -> None:
        """Rewrite the line, cut to the terminal's width so it never wraps."""
        width = shutil.get_terminal_size().columns - 1
        with self._lock:
            if self._stop.is_set():
                return  # closed: the line is erased and stays so
            self._stream.write(_REWRITE + self.text()[: max(width, 20)])
            self._stream.flush()
            self._drawn = True

    def advance(self, finished: int, tally: Counter[str]) -> None:
        """Count jobs that finished."""
        self._finished += finished

    def pending(self, entries: Sequence[PollEntry]) -> None:
        """Take the unfinished jobs' latest entries and redraw."""
        self._pending = list(entries)
        self.draw()

    def unreachable(self, message: str) -> None:
        """Put the warning on a line of its own above the status line, which goes on."""
        with self._lock:
            if self._stop.is_set():
                return
            self._stream.write(f"{_REWRITE}Warning: {message}\n")
            self._drawn = False
        self.draw()

    def close(self) -> None:
        """Stop redrawing and erase the line."""
        self._stop.set()
        self._ticker.join()
        with self._lock:
            if self._drawn:
                self._stream.write(_REWRITE)
                self._stream.flush()
            self._drawn = False

    def _tick(self, every: float) -> None:
        while not self._stop.wait(every):
            self.draw()
