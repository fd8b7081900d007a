"""What a wait reports to: the progress bar of ``jobs.wait(..., progress=True)``.

tqdm is imported only when a bar is wanted, so ``import openbeepboop`` stays
light and scripts that never show progress never load it. The command line's
status line (``openbeepboop.cli.status_line``) is another :class:`Progress`.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Protocol, TextIO

from openbeepboop_schemas import JobStatus, PollEntry

logger = logging.getLogger(__name__)

_QUEUED = JobStatus.QUEUED.value
_PROCESSING = JobStatus.PROCESSING.value


class Progress(Protocol):
    """What a waiting loop reports to: finished jobs, the status tally, the unfinished ones."""

    def advance(self, finished: int, tally: Counter[str]) -> None:
        """``finished`` more jobs are done; ``tally`` counts finished jobs by status."""

    def pending(self, entries: Sequence[PollEntry]) -> None:
        """After each round: the latest entries of the jobs not finished yet."""

    def unreachable(self, message: str) -> None:
        """The server stopped answering and the wait keeps trying: said once per outage."""

    def close(self) -> None:
        """Stop drawing."""


def queued_and_running(entries: Sequence[PollEntry]) -> tuple[int, int]:
    """How many of ``entries`` are ``QUEUED`` and how many ``PROCESSING``."""
    queued = sum(1 for entry in entries if entry.status == _QUEUED)
    running = sum(1 for entry in entries if entry.status == _PROCESSING)
    return queued, running


class NoProgress:
    """Reports nowhere."""

    def advance(self, finished: int, tally: Counter[str]) -> None:
        """Do nothing."""

    def pending(self, entries: Sequence[PollEntry]) -> None:
        """Do nothing."""

    def unreachable(self, message: str) -> None:
        """Log it as a warning: with no logging set up, Python still prints it on stderr."""
        logger.warning("%s", message)

    def close(self) -> None:
        """Do nothing."""


class TqdmProgress:
    """A tqdm bar on stderr: ``jobs  42%|████     | 420/1000 [COMPLETED=410, FAILED=10]``."""

    def __init__(self, total: int, *, desc: str = "jobs", file: TextIO | None = None) -> None:
        # tqdm ships no type information of its own (types-tqdm is optional).
        from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]

        self._finished = ""
        self._waiting = ""
        self._file = file if file is not None else sys.stderr
        self._bar = tqdm(
            total=total,
            desc=desc,
            unit="job",
            file=self._file,
            dynamic_ncols=True,
            leave=True,
        )

    def advance(self, finished: int, tally: Counter[str]) -> None:
        """Move the bar and show the tally of finished statuses."""
        if tally:
            self._finished = ", ".join(
                f"{status}={count}" for status, count in sorted(tally.items())
            )
            self._postfix()
        if finished:
            self._bar.update(finished)
        else:
            self._bar.refresh()

    def pending(self, entries: Sequence[PollEntry]) -> None:
        """Show how many unfinished jobs are still queued and how many running."""
        queued, running = queued_and_running(entries)
        self._waiting = f"queued={queued}, running={running}" if entries else ""
        self._postfix()
        self._bar.refresh()

    def unreachable(self, message: str) -> None:
        """Print the warning above the bar, which stays where it is."""
        self._bar.write(f"Warning: {message}", file=self._file)

    def _postfix(self) -> None:
        text = "; ".join(part for part in (self._finished, self._waiting) if part)
        self._bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        """Leave the final bar on screen."""
        self._bar.close()


def open_progress(enabled: bool, total: int, desc: str = "jobs") -> Progress:
    """A tqdm bar when ``enabled``, else a no-op."""
    return TqdmProgress(total, desc=desc) if enabled else NoProgress()
