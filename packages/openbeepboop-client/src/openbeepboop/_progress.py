"""The progress bar ``jobs.wait(..., progress=True)`` and the CLI draw.

tqdm is imported only when a bar is wanted, so ``import openbeepboop`` stays
light and scripts that never show progress never load it.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Protocol, TextIO


class Progress(Protocol):
    """What a waiting loop reports to: finished jobs, and the status tally."""

    def advance(self, finished: int, tally: Counter[str]) -> None:
        """``finished`` more jobs are done; ``tally`` counts finished jobs by status."""

    def close(self) -> None:
        """Stop drawing."""


class NoProgress:
    """Reports nowhere."""

    def advance(self, finished: int, tally: Counter[str]) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""


class TqdmProgress:
    """A tqdm bar on stderr: ``jobs  42%|████     | 420/1000 [COMPLETED=410, FAILED=10]``."""

    def __init__(self, total: int, *, desc: str = "jobs", file: TextIO | None = None) -> None:
        # tqdm ships no type information of its own (types-tqdm is optional).
        from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]

        self._bar = tqdm(
            total=total,
            desc=desc,
            unit="job",
            file=file if file is not None else sys.stderr,
            dynamic_ncols=True,
            leave=True,
        )

    def advance(self, finished: int, tally: Counter[str]) -> None:
        """Move the bar and show the tally of finished statuses."""
        if tally:
            self._bar.set_postfix_str(
                ", ".join(f"{status}={count}" for status, count in sorted(tally.items())),
                refresh=False,
            )
        if finished:
            self._bar.update(finished)
        else:
            self._bar.refresh()

    def close(self) -> None:
        """Leave the final bar on screen."""
        self._bar.close()


def open_progress(enabled: bool, total: int, desc: str = "jobs") -> Progress:
    """A tqdm bar when ``enabled``, else a no-op."""
    return TqdmProgress(total, desc=desc) if enabled else NoProgress()
