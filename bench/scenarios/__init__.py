"""One module per scenario; each ``run(ctx)`` returns its figures.

Every scenario starts its own cluster (fresh server and database) so that one
figure's leftovers (a queue of 50,000 jobs, a busy node) never weigh on the
next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.cluster import Cluster
from harness.cpu import CpuMeter
from harness.figures import Figure


@dataclass
class Context:
    """What a scenario may use: the run's size and a place for its processes."""

    root: Path
    quick: bool
    #: ``--profile``: run py-spy on the server (and node) and keep the flame graphs here.
    profile_dir: Path | None = None
    _count: int = field(default=0)

    def cluster(self, name: str) -> Cluster:
        """A fresh cluster in its own subdirectory."""
        self._count += 1
        path = self.root / f"{self._count:02d}-{name}"
        path.mkdir(parents=True)
        return Cluster(path)

    def meter(self, name: str, pids: dict[str, int]) -> CpuMeter:
        """A CPU meter over ``pids``; with ``--profile`` it also records py-spy profiles."""
        profile = self.profile_dir / name if self.profile_dir is not None else None
        return CpuMeter(pids, profile=profile)

    def size(self, full: int, quick: int) -> int:
        """``full``, or ``quick`` with ``--quick``."""
        return quick if self.quick else full


Scenario = Callable[[Context], list[Figure]]
