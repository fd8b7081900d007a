"""Usage per key: jobs by final status, tokens and LLM seconds, counted per hour.

Every transition that ends jobs (:mod:`.transitions`) counts them in its own
transaction, so the counters move exactly when the jobs do, on every replica,
and a rolled-back delivery counts nothing: a node's delivery adds the totals
it built from the leases it read (:func:`add_totals`), every other ending
(cancel, expiry, an unreadable request) reads the jobs it ended
(:func:`record_endings`). The rows are per key and per hour (``key_usage``), never per job:
they survive the retention purge of the jobs they count, and a time window
(``GET /v1/usage?since=&until=``) is a sum over whole hours.

What is counted (docs/server.md, "Usage per key"):

* jobs that ended COMPLETED, FAILED or CANCELLED, by that status, in the hour
  they ended;
* ``prompt_tokens`` and ``completion_tokens`` from each result's ``usage``,
  as the node delivered it, each clamped into ``[0, TOKEN_CEILING]``; the
  hourly totals saturate at :data:`TOKEN_CEILING` (the result itself is
  stored as delivered: a node's absurd count must neither fail the delivery
  nor overflow a 64-bit column, nor a sum of them over a window);
* LLM seconds: for a job a node delivered (a result or a final error), the
  time from the claim of its last attempt to the delivery, measured by the
  server's clock (a node's own timings are not trusted for accounting).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from openbeepboop_schemas import JobStatus

from openbeepboop_server.db.database import IN_CHUNK
from openbeepboop_server.db.driver_sql import DriverStatement
from openbeepboop_server.db.tables import api_keys, jobs, key_usage

HOUR_SECONDS = 3600.0
#: The most one count adds, and the most an hourly total holds (tokens and
#: jobs alike; a trillion tokens a key an hour is far above any real pool). Far below 2**63 - 1 (the
#: most a SQLite INTEGER or PostgreSQL BIGINT holds) so that a report's sum of
#: saturated hours cannot overflow either (SQLite's ``sum()`` raises on
#: integer overflow): 2**63 / 10**12 hours is over a thousand years.
TOKEN_CEILING = 10**12
#: The final statuses counted, each with its column of ``key_usage``.
STATUS_COLUMNS = {
    JobStatus.COMPLETED.value: "completed",
    JobStatus.FAILED.value: "failed",
    JobStatus.CANCELLED.value: "cancelled",
}
_COUNTS = ("completed", "failed", "cancelled", "prompt_tokens", "completion_tokens")
_SUMS = (*_COUNTS, "llm_seconds")

_ENDED = sa.select(jobs.c.seq, jobs.c.owner_key_id, jobs.c.status, jobs.c.started_at).where(
    jobs.c.seq.in_(sa.bindparam("seqs", expanding=True)),
    jobs.c.completed_at == sa.bindparam("now"),
)


@dataclass
class KeyTotals:
    """What one key's jobs used (in one hour, or summed over a window)."""

    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_seconds: float = 0.0

    def add(self, other: KeyTotals) -> None:
        """Add ``other``'s counts to these."""
        for name in _SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class KeyUsageRow:
    """A key's usage over a window, as reported."""

    key_name: str
    totals: KeyTotals = field(default_factory=KeyTotals)


def hour_of(when: float) -> float:
    """The start of the hour ``when`` falls in (Unix seconds)."""
    return math.floor(when / HOUR_SECONDS) * HOUR_SECONDS


def record_endings(
    conn: sa.Connection,
    seqs: Sequence[int],
    *,
    now: float,
    timed: bool = False,
) -> None:
    """Count the jobs ``seqs`` that just ended at ``now`` in their keys' usage.

    ``timed``: the jobs were delivered by a node, so their last lease's time
    is LLM time (tokens are counted only by a delivery, through
    :func:`add_totals`, which has the results in hand). Jobs whose row did
    not end at ``now`` (a guarded update that matched nothing) are not counted.
    """
    if not seqs:
        return
    per_key: dict[int, KeyTotals] = {}
    for start in range(0, len(seqs), IN_CHUNK):
        chunk = list(seqs[start : start + IN_CHUNK])
        for row in conn.execute(_ENDED, {"seqs": chunk, "now": now}):
            column = STATUS_COLUMNS.get(row.status)
            if column is None:
                continue
            totals = per_key.setdefault(row.owner_key_id, KeyTotals())
            setattr(totals, column, getattr(totals, column) + 1)
            if timed and row.started_at is not None:
                totals.llm_seconds += max(0.0, now - row.started_at)
    add_totals(conn, now, per_key)


def add_totals(conn: sa.Connection, now: float, per_key: Mapping[int, KeyTotals]) -> None:
    """Add each key's totals (by key id) to its row for the hour of ``now`` (an upsert).

    For callers that know what ended without reading the jobs again (a
    delivery has every lease's job and claim time in hand). Each count is
    clamped into ``[0, TOKEN_CEILING]`` before it is added, and the upsert
    saturates the stored totals at :data:`TOKEN_CEILING`.
    """
    if not per_key:
        return
    hour = hour_of(now)
    rows = [
        {
            "key_id": key_id,
            "hour": hour,
            **{name: bounded(getattr(t, name)) for name in _COUNTS},
            "llm_seconds": t.llm_seconds,
        }
        for key_id, t in sorted(per_key.items())  # a fixed lock order across replicas
    ]
    _upsert(conn.dialect.name).execute(conn, rows)


@functools.cache
def _upsert(dialect: str) -> DriverStatement:
    """The hourly upsert, built once per dialect: building it (an ``excluded``
    alias and six expressions) cost more than running it, every delivery."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    statement = insert(key_usage)
    # least() on PostgreSQL, the scalar min() on SQLite. The stored total is
    # bounded first, so even a row from before the bound cannot overflow.
    least = sa.func.least if dialect == "postgresql" else sa.func.min
    ceiling = sa.literal_column(str(TOKEN_CEILING), sa.BigInteger())
    set_: dict[str, Any] = {
        name: least(least(key_usage.c[name], ceiling) + statement.excluded[name], ceiling)
        for name in _COUNTS
    }
    set_["llm_seconds"] = key_usage.c.llm_seconds + statement.excluded.llm_seconds
    return DriverStatement(
        statement.on_conflict_do_update(
            index_elements=[key_usage.c.key_id, key_usage.c.hour], set_=set_
        )
    )


def bounded(count: int) -> int:
    """``count`` clamped into ``[0, TOKEN_CEILING]``."""
    return min(max(count, 0), TOKEN_CEILING)


def read_usage(
    conn: sa.Connection,
    *,
    key_name: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> list[KeyUsageRow]:
    """Usage per key over the whole hours that overlap ``[since, until)``, by key
    name; ``key_name`` limits it to one key.

    Keys that used nothing in the window are listed too (with zeros) when
    they are named, or when they submit (USER, ADMIN), so a report shows
    every account.
    """
    query = (
        sa.select(
            api_keys.c.name, *(sa.func.coalesce(sa.func.sum(key_usage.c[n]), 0) for n in _SUMS)
        )
        .select_from(api_keys.outerjoin(key_usage, _window(since, until)))
        .group_by(api_keys.c.id, api_keys.c.name)
        .order_by(api_keys.c.name)
    )
    if key_name is not None:
        query = query.where(api_keys.c.name == key_name)
    else:
        query = query.where(api_keys.c.role.in_(("USER", "ADMIN")))
    report = []
    for row in conn.execute(query):
        totals = _totals(row)
        report.append(KeyUsageRow(key_name=row[0], totals=totals))
    return report


def _window(since: float | None, until: float | None) -> sa.ColumnElement[bool]:
    condition = key_usage.c.key_id == api_keys.c.id
    if since is not None:
        condition = sa.and_(condition, key_usage.c.hour >= hour_of(since))
    if until is not None:
        condition = sa.and_(condition, key_usage.c.hour < until)
    return condition


def totals_by_key(conn: sa.Connection) -> list[KeyUsageRow]:
    """All-time usage of every key that used anything (for the Prometheus counters)."""
    query = (
        sa.select(api_keys.c.name, *(sa.func.sum(key_usage.c[n]) for n in _SUMS))
        .select_from(key_usage.join(api_keys, api_keys.c.id == key_usage.c.key_id))
        .group_by(api_keys.c.id, api_keys.c.name)
        .order_by(api_keys.c.name)
    )
    return [
        KeyUsageRow(
            key_name=row[0],
            totals=_totals(row),
        )
        for row in conn.execute(query)
    ]


def _totals(row: Any) -> KeyTotals:
    """A :class:`KeyTotals` from a row of (name, *sums in ``_SUMS`` order)."""
    counts = [int(value or 0) for value in row[1:6]]
    return KeyTotals(*counts, llm_seconds=float(row[6] or 0.0))  # type: ignore[misc]
