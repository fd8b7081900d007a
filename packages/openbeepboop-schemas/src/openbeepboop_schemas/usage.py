"""Usage per API key: what ``GET /v1/usage`` answers and both ``usage`` commands print.

Counted by the server when jobs end, per key and per hour, and kept when the
jobs themselves are purged. A window is a whole number of hours: every hour
that overlaps ``[since, until)``. :func:`format_usage` is the one human
rendering, shared by ``openbeepboop-server usage`` and
``openbeepboop-client usage``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from openbeepboop_schemas._base import TolerantBody


class KeyUsageTotals(TolerantBody):
    """What one key's jobs used within the window."""

    key: str
    #: Jobs that ended in the window, by final status.
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    #: Token counts from the results' ``usage``.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    #: For jobs a node delivered: claim of the last attempt to the delivery, summed.
    llm_seconds: float = 0.0


class UsageReport(TolerantBody):
    """Usage per key over a window (``None`` bounds: since the beginning, until now)."""

    object: Literal["usage"] = "usage"
    since: float | None = None
    until: float | None = None
    data: list[KeyUsageTotals] = []


def _when(value: float | None, default: str) -> str:
    if value is None:
        return default
    return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def format_usage(report: UsageReport) -> str:
    """The report as a table with a one-line heading (what both CLIs print)."""
    heading = (
        f"Usage from {_when(report.since, 'the beginning')} "
        f"to {_when(report.until, 'now')} (whole hours)"
    )
    header = ["KEY", "COMPLETED", "FAILED", "CANCELLED", "PROMPT", "COMPLETION", "LLM SECONDS"]
    rows = [
        [
            entry.key,
            str(entry.completed),
            str(entry.failed),
            str(entry.cancelled),
            str(entry.prompt_tokens),
            str(entry.completion_tokens),
            f"{entry.llm_seconds:.1f}",
        ]
        for entry in report.data
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]
    if not rows:
        lines.append("(no keys)")
    return "\n".join([heading, *lines])
