"""Per-key quotas on submits: ``max_queued`` unfinished jobs and ``rate_limit`` per minute.

:func:`admit` runs inside the submit's own write transaction, before any row
is inserted, so a refused request stores nothing (a bulk is all or nothing)
and an accepted one spends its allowance atomically with its jobs.

* ``max_queued`` counts the key's QUEUED and PROCESSING jobs through the
  partial index ``ix_jobs_owner_unfinished``: as many entries as the key has
  jobs waiting, never its history.
* ``rate_limit`` counts submit *requests* per minute (a bulk or a batch is one
  request; ``max_queued`` bounds how many jobs they bring). It is a GCRA
  (generic cell rate algorithm): one request every ``60 / rate`` seconds, with
  bursts of up to a whole minute's allowance. Its only state, the
  "theoretical arrival time", lives in the key's row, so every replica spends
  the same allowance.

On PostgreSQL the key's row is locked (``FOR UPDATE``) first: concurrent
submits of one key, on any replica, take turns, and the count each sees
includes the jobs the previous one committed. Keys without quotas skip all
of this: the check costs nothing unless a quota is set.
"""

from __future__ import annotations

import math

import sqlalchemy as sa
from openbeepboop_schemas import JobStatus

from openbeepboop_server.db.tables import api_keys, jobs
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

_UNFINISHED = (JobStatus.QUEUED.value, JobStatus.PROCESSING.value)
_STATE = sa.select(api_keys.c.rate_tat).where(api_keys.c.id == sa.bindparam("key_id"))
_STATE_LOCKED = _STATE.with_for_update()
_COUNT_UNFINISHED = (
    sa.select(sa.func.count())
    .select_from(jobs)
    .where(jobs.c.owner_key_id == sa.bindparam("key_id"), jobs.c.status.in_(_UNFINISHED))
)
_SPEND = (
    api_keys.update()
    .where(api_keys.c.id == sa.bindparam("key_id"))
    .values(rate_tat=sa.bindparam("tat"))
)


def admit(conn: sa.Connection, caller: Caller, jobs_wanted: int, *, now: float, lock: bool) -> None:
    """Let a submit of ``jobs_wanted`` jobs by ``caller`` through, or raise :class:`QuotaExceeded`.

    Call inside the submit's write transaction, before inserting; ``lock``
    (PostgreSQL) locks the key's row for the rest of the transaction.
    """
    if not caller.has_quota:
        return
    params = {"key_id": caller.key_id}
    stored_tat = conn.execute(_STATE_LOCKED if lock else _STATE, params).scalar()
    new_tat = None
    if caller.rate_limit is not None:
        new_tat = _spend(caller.rate_limit, stored_tat, now)
    if caller.max_queued is not None:
        _check_unfinished(conn, caller, caller.max_queued, jobs_wanted)
    if new_tat is not None:
        conn.execute(_SPEND, {"key_id": caller.key_id, "tat": new_tat})


def _spend(rate: int, stored_tat: float | None, now: float) -> float:
    """The new theoretical arrival time after one more request, or :class:`QuotaExceeded`."""
    interval = RATE_WINDOW_SECONDS / rate
    tat = max(stored_tat or now, now) + interval
    early = tat - now - RATE_WINDOW_SECONDS
    if early > 1e-9:
        raise QuotaExceeded(
            f"rate limit of this key reached: {rate} submit request(s) per minute; "
            f"retry in {math.ceil(early)} s",
            retry_after=max(1, math.ceil(early)),
            code=RATE_LIMIT_CODE,
        )
    return tat


def _check_unfinished(conn: sa.Connection, caller: Caller, limit: int, wanted: int) -> None:
    unfinished = conn.execute(_COUNT_UNFINISHED, {"key_id": caller.key_id}).scalar_one()
    if unfinished + wanted <= limit:
        return
    if wanted > limit:
        advice = f"this request alone has {wanted} jobs: split it"
    else:
        advice = "retry when some have finished"
    raise QuotaExceeded(
        f"this key may have at most {limit} unfinished (QUEUED or PROCESSING) job(s); "
        f"it has {unfinished} and this request adds {wanted}: {advice}",
        retry_after=MAX_QUEUED_RETRY_AFTER,
        code=MAX_QUEUED_CODE,
    )
