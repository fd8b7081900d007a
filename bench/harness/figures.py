"""One measured figure, its target, and what bounds it."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """``>= value`` (throughputs) or ``<= value`` (latencies, memory, ratios)."""

    op: str
    value: float

    def met(self, measured: float) -> bool:
        """Whether ``measured`` meets the target."""
        return measured >= self.value if self.op == ">=" else measured <= self.value

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {fmt(self.value)}"


def at_least(value: float) -> Target:
    """A floor (throughputs)."""
    return Target(">=", value)


def at_most(value: float) -> Target:
    """A ceiling (latencies, memory, ratios)."""
    return Target("<=", value)


@dataclass
class Figure:
    """A measured value with its unit, target, the run's parameters and its bound."""

    key: str
    label: str
    value: float
    unit: str
    target: Target | None = None
    #: What limits it (the busiest process, or the latency chain), measured.
    bound: str = ""
    #: Parameters and side numbers (counts, p99, per-process CPU).
    detail: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        """True/False against the target; None for an informational figure."""
        return None if self.target is None else self.target.met(self.value)

    def measured(self) -> str:
        """``1,234 jobs/s``."""
        return f"{fmt(self.value)} {self.unit}".strip()


def fmt(value: float) -> str:
    """Numbers the way a reader scans them: thousands separators, few decimals."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def percentile(samples: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank on the sorted samples)."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(samples: Sequence[float]) -> float:
    """The median."""
    return statistics.median(samples)
