"""The pool at a glance: what ``GET /v1/status`` answers and both ``status`` commands print.

Queues per model, the nodes online, in-flight work, throughput and error
rate over a recent window, the latest failures and per-key usage. Every list
is bounded by the server (the ``*_total`` fields say how many there were).
No field ever carries a prompt or a result: failures show the error the node
reported, nothing of the job's request.

:func:`format_pool_status` is the one human rendering, shared by
``openbeepboop-server status`` and ``openbeepboop-client status`` so that the
two print the same thing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from openbeepboop_schemas._base import TolerantBody
from openbeepboop_schemas.printable import escape_control


class WindowCounts(TolerantBody):
    """Jobs that finished within the window, by how they ended, and the rates derived."""

    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    #: ``completed`` per minute of the window.
    completed_per_minute: float = 0.0
    #: ``failed / (completed + failed)``; ``None`` when neither happened (cancels don't count).
    error_rate: float | None = None


class ModelStatus(TolerantBody):
    """One model: its queue, the nodes serving it, how it did within the window."""

    model: str
    queued: int = 0
    processing: int = 0
    #: Seconds since the oldest ``QUEUED`` job of this model was submitted.
    oldest_queued_seconds: float | None = None
    #: Online nodes that declared this model by name (``*`` nodes are not counted).
    nodes: int = 0
    window: WindowCounts = Field(default_factory=WindowCounts)


class NodeStatus(TolerantBody):
    """One node seen within the server's ``node_seen_seconds``."""

    node_id: str
    key_name: str
    version: str | None = None
    models: list[str] = Field(default_factory=list)
    last_seen: float
    #: ``generated_at - last_seen``: immune to a clock difference with the reader.
    seen_seconds_ago: float
    #: Leases the node holds now (its jobs in ``PROCESSING``).
    in_flight: int = 0


class RecentFailure(TolerantBody):
    """A job that ended ``FAILED``: which, when, and the error; never its prompt."""

    job_id: str
    model: str
    error_type: str | None = None
    error_message: str | None = None
    failed_at: float
    attempts: int = 0


class KeyUsage(TolerantBody):
    """What one API key's jobs did within the window."""

    key_name: str
    window: WindowCounts = Field(default_factory=WindowCounts)


class PoolStatus(TolerantBody):
    """``GET /v1/status``: the whole pool, read from the database at ``generated_at``."""

    object: Literal["pool.status"] = "pool.status"
    generated_at: float
    #: Length of the throughput / error-rate window, in seconds.
    window_seconds: float
    #: A node counts as online this long after its last fetch or heartbeat.
    node_seen_seconds: float
    queued: int = 0
    #: Jobs in ``PROCESSING``: leased to a node right now.
    processing: int = 0
    oldest_queued_seconds: float | None = None
    window: WindowCounts = Field(default_factory=WindowCounts)
    models: list[ModelStatus] = Field(default_factory=list)
    models_total: int = 0
    nodes: list[NodeStatus] = Field(default_factory=list)
    nodes_online: int = 0
    recent_failures: list[RecentFailure] = Field(default_factory=list)
    keys: list[KeyUsage] = Field(default_factory=list)
    keys_total: int = 0


def format_duration(seconds: float | None) -> str:
    """``42s``, ``7m``, ``3h``, ``2d`` (``-`` for none)."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if whole >= 2 * size:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def format_rate(rate: float | None) -> str:
    """An error rate as a percentage (``-`` when nothing finished)."""
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    # Every cell is escaped here, once: a model name, node id, version or
    # error message holding a control character must not act on the terminal
    # or split a row (see openbeepboop_schemas.printable).
    rows = [[escape_control(cell) for cell in row] for row in rows]
    widths = [
        max([len(header), *(len(row[i]) for row in rows)]) for i, header in enumerate(headers)
    ]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    ]


def _more(shown: int, total: int, what: str) -> list[str]:
    return [f"... and {total - shown} more {what}"] if total > shown else []


def format_pool_status(status: PoolStatus) -> str:
    """The status as the human tables both ``status`` commands print."""
    minutes = format_duration(status.window_seconds)
    window = status.window
    lines = [
        f"Queued: {status.queued} (oldest waiting {format_duration(status.oldest_queued_seconds)})"
        f"   In flight: {status.processing}   Nodes online: {status.nodes_online}",
        f"Last {minutes}: {window.completed} completed ({window.completed_per_minute:.1f}/min), "
        f"{window.failed} failed, {window.cancelled} cancelled, "
        f"error rate {format_rate(window.error_rate)}",
        "",
    ]
    model_rows = [
        [
            model.model,
            str(model.queued),
            format_duration(model.oldest_queued_seconds),
            str(model.processing),
            str(model.nodes),
            f"{model.window.completed_per_minute:.1f}",
            format_rate(model.window.error_rate),
        ]
        for model in status.models
    ]
    headers = ["MODEL", "QUEUED", "OLDEST", "IN FLIGHT", "NODES", "DONE/MIN", "ERRORS"]
    lines += _table(headers, model_rows) if model_rows else ["No models: no jobs and no nodes."]
    lines += _more(len(status.models), status.models_total, "models")
    lines.append("")
    node_rows = [
        [
            node.node_id,
            node.key_name,
            node.version or "-",
            ",".join(node.models),
            str(node.in_flight),
            f"{format_duration(node.seen_seconds_ago)} ago",
        ]
        for node in status.nodes
    ]
    if node_rows:
        lines += _table(["NODE", "KEY", "VERSION", "MODELS", "IN FLIGHT", "LAST SEEN"], node_rows)
    else:
        lines.append(f"No node seen in the last {format_duration(status.node_seen_seconds)}.")
    lines += _more(len(status.nodes), status.nodes_online, "nodes")
    if status.recent_failures:
        lines += ["", "Recent failures:"]
        lines += _table(
            ["JOB", "MODEL", "TYPE", "WHEN", "MESSAGE"],
            [
                [
                    failure.job_id,
                    failure.model,
                    failure.error_type or "-",
                    f"{format_duration(status.generated_at - failure.failed_at)} ago",
                    " ".join((failure.error_message or "").split())[:120],
                ]
                for failure in status.recent_failures
            ],
        )
    return "\n".join(lines)
