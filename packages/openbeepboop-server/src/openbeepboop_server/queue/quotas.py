"""Per-key quotas on submits: ``max_queued`` unfinished jobs and ``rate_limit`` per minute.

:func:`admit` runs inside the submit's own write transaction, before any row
is inserted, so a refused request stores nothing (a bulk is all or nothing)
and an accepted one spends its allowance atomically with its jobs.

* ``rate_limit`` counts submit *requests* per minute (a bulk or a batch is one
  request; ``max_queued`` bounds how many jobs they bring). It is a GCRA
  (generic cell rate algorithm): one request every ``60 / rate`` seconds, with
  bursts of up to a whole minute's allowance. Its only state, the
  "theoretical arrival time" (``rate_tat``), lives in the key's row, so every
  replica spends the same allowance.
* ``max_queued`` compares the key's QUEUED and PROCESSING jobs with the
  quota. Counting them costs a walk of the partial index
  ``ix_jobs_owner_unfinished`` as long as the key's queue, so the key's row
  keeps ``queued_hint``, an upper bound of that count: every admitted submit
  adds its jobs to it, and jobs that finish only make it looser. While the
  hint plus the new jobs fits the quota, the submit passes without a count;
  otherwise the jobs are counted (at most ``max_queued + 1`` index entries)
  and the hint is reset to the truth. ``keys update --max-queued`` clears it.
  The lines of the key's OpenAI batches still ``validating`` count too, as far
  as they are not jobs yet (``batches.lines - batches.total``): a batch's
  creation admits all its lines, and until they are queued no job says so.

The common case, a submit within both limits, is one ``UPDATE ... RETURNING``
of the key's row that checks and spends both at once. On PostgreSQL that
update (or, without a rate limit, ``FOR UPDATE``) locks the key's row for the
rest of the transaction: concurrent submits of one key, on any replica, take
turns, and the count each sees includes what the previous one committed.
Keys without quotas skip all of this: the check costs nothing unless a quota
is set.
"""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa

from openbeepboop_server.db.tables import api_keys
from openbeepboop_server.errors import QuotaExceeded
from openbeepboop_server.keys import Caller

#: The rate limit's window: ``rate_limit`` is per this many seconds.
RATE_WINDOW_SECONDS = 60.0
#: ``Retry-After`` of a refusal for ``max_queued``: when jobs finish is not
#: known, so a client is told to look again after a short while.
MAX_QUEUED_RETRY_AFTER = 5
#: ``code`` of the envelope for each quota.
MAX_QUEUED_CODE = "max_queued_exceeded"
RATE_LIMIT_CODE = "rate_limit_exceeded"
#: Stands in for "no rate limit" in the combined statement: no request is early.
_NO_WINDOW = 1e18

#: Both checks and both spends in one statement; no row back: one of them
#: did not pass (the slow path finds out which). ``:max_queued`` NULL: no quota.
#: SQLite's is handed to the driver as it is (``exec_driver_sql``: the sqlite3
#: module takes ``:name`` parameters itself), sparing SQLAlchemy's per-statement
#: work, a third of the check's cost; success is the row count.
_FAST_PATH_SQLITE = (
    "UPDATE api_keys SET "
    "rate_tat = max(coalesce(rate_tat, :now), :now) + :interval, "
    "queued_hint = CASE WHEN :max_queued IS NULL THEN queued_hint "
    "ELSE queued_hint + :wanted END "
    "WHERE id = :key_id "
    "AND max(coalesce(rate_tat, :now), :now) + :interval - :now <= :window "
    "AND (:max_queued IS NULL OR queued_hint + :wanted <= :max_queued)"
)
_FAST_PATH = {
    "postgresql": sa.text(
        "UPDATE api_keys SET "
        "rate_tat = greatest(coalesce(rate_tat, CAST(:now AS double precision)), "
        "CAST(:now AS double precision)) + CAST(:interval AS double precision), "
        "queued_hint = CASE WHEN CAST(:max_queued AS bigint) IS NULL THEN queued_hint "
        "ELSE queued_hint + CAST(:wanted AS bigint) END "
        "WHERE id = :key_id "
        "AND greatest(coalesce(rate_tat, CAST(:now AS double precision)), "
        "CAST(:now AS double precision)) + CAST(:interval AS double precision) "
        "- CAST(:now AS double precision) <= CAST(:window AS double precision) "
        "AND (CAST(:max_queued AS bigint) IS NULL "
        "OR queued_hint + CAST(:wanted AS bigint) <= CAST(:max_queued AS bigint)) "
        "RETURNING id"
    ),
}
#: The key's unfinished jobs, at most ``:cap``, through ``ix_jobs_owner_unfinished``.
#: The statuses are literals: SQLite uses a partial index only when the
#: query's WHERE visibly implies the index's, which a bound ``IN (?, ?)`` does
#: not (it would walk every job the key ever had).
_COUNT_UNFINISHED = sa.text(
    "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE owner_key_id = :key_id "
    "AND status IN ('QUEUED', 'PROCESSING') LIMIT :cap) AS unfinished"
)
#: Lines of the key's batches still validating that are not jobs yet (the jobs
#: queued so far, held, are counted as jobs). Few rows: only validating batches.
_COUNT_VALIDATING = sa.text(
    "SELECT coalesce(sum(lines - total), 0) FROM batches "
    "WHERE owner_key_id = :key_id AND status = 'validating'"
)
_STATE = sa.select(api_keys.c.rate_tat, api_keys.c.queued_hint).where(
    api_keys.c.id == sa.bindparam("key_id")
)
_STATE_LOCKED = _STATE.with_for_update()
_SET_STATE = (
    api_keys.update()
    .where(api_keys.c.id == sa.bindparam("key_id"))
    .values(rate_tat=sa.bindparam("tat"), queued_hint=sa.bindparam("hint"))
)


def admit(conn: sa.Connection, caller: Caller, jobs_wanted: int, *, now: float, lock: bool) -> None:
    """Let a submit of ``jobs_wanted`` jobs by ``caller`` through, or raise :class:`QuotaExceeded`.

    Call inside the submit's write transaction, before inserting; ``lock``
    (PostgreSQL) means the key's row is locked for the rest of the
    transaction. A refusal leaves the transaction to be rolled back by the
    raise: nothing of the request, and nothing of the allowance, is kept.
    """
    if not caller.has_quota:
        return
    rate = caller.rate_limit
    interval = 0.0 if rate is None else RATE_WINDOW_SECONDS / rate
    params: dict[str, Any] = {
        "key_id": caller.key_id,
        "now": now,
        "interval": interval,
        "window": _NO_WINDOW if rate is None else RATE_WINDOW_SECONDS,
        "max_queued": caller.max_queued,
        "wanted": jobs_wanted,
    }
    if conn.dialect.name == "sqlite":
        if conn.exec_driver_sql(_FAST_PATH_SQLITE, params).rowcount:
            return
    elif conn.execute(_FAST_PATH[conn.dialect.name], params).first() is not None:
        return
    _slow_path(conn, caller, jobs_wanted, now=now, interval=interval, lock=lock)


def _slow_path(
    conn: sa.Connection, caller: Caller, wanted: int, *, now: float, interval: float, lock: bool
) -> None:
    """Which limit refused the fast path, or a fresh count that lets the submit through."""
    state = conn.execute(_STATE_LOCKED if lock else _STATE, {"key_id": caller.key_id}).one()
    tat = max(state.rate_tat or now, now) + interval
    if caller.rate_limit is not None:
        early = tat - now - RATE_WINDOW_SECONDS
        if early > 1e-9:
            raise QuotaExceeded(
                f"rate limit of this key reached: {caller.rate_limit} submit request(s) per "
                f"minute; retry in {math.ceil(early)} s",
                retry_after=max(1, math.ceil(early)),
                code=RATE_LIMIT_CODE,
            )
    hint = state.queued_hint
    if caller.max_queued is not None:
        hint = _count_unfinished(conn, caller, caller.max_queued, wanted) + wanted
    conn.execute(_SET_STATE, {"key_id": caller.key_id, "tat": tat, "hint": hint})


def _count_unfinished(conn: sa.Connection, caller: Caller, limit: int, wanted: int) -> int:
    """The key's unfinished jobs, if ``wanted`` more fit under ``limit``; else refuse.

    Lines of its batches still validating count as unfinished jobs.
    """
    unfinished = int(
        conn.execute(_COUNT_UNFINISHED, {"key_id": caller.key_id, "cap": limit + 1}).scalar_one()
    ) + max(0, int(conn.execute(_COUNT_VALIDATING, {"key_id": caller.key_id}).scalar_one()))
    if unfinished + wanted <= limit:
        return unfinished
    if wanted > limit:
        advice = f"this request alone has {wanted} jobs: split it"
    else:
        advice = "retry when some have finished"
    shown = f"{unfinished}" if unfinished <= limit else f"more than {limit}"
    raise QuotaExceeded(
        f"this key may have at most {limit} unfinished (QUEUED or PROCESSING) job(s); "
        f"it has {shown} and this request adds {wanted}: {advice}",
        retry_after=MAX_QUEUED_RETRY_AFTER,
        code=MAX_QUEUED_CODE,
    )
