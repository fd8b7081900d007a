"""Atomic claims: which QUEUED jobs become leases, many in one transaction.

The rows change status through :func:`.transitions.start` (and
:func:`.transitions.fail_unreadable`); this module picks them. No request is
parsed inside the claim's transaction: the stored JSON comes out as text and
is read after the commit (:func:`read_claimed`).

On SQLite the caller holds the one writer (``BEGIN IMMEDIATE`` plus the
in-process lock), so select-then-update cannot race. On PostgreSQL the select
is ``FOR UPDATE SKIP LOCKED``: concurrent claimers (other replicas) skip rows
someone else is taking instead of waiting for them.

Each declared model is read through ``ix_jobs_claim`` (status, model, seq) in
FIFO order with ``LIMIT max_jobs``; the per-model heads are merged by ``seq``.
That keeps the cost of a claim proportional to ``max_jobs``, not to the
queue's length. ``*`` reads ``ix_jobs_status_seq`` instead.
"""

from __future__ import annotations

import functools
import heapq
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from openbeepboop_schemas import ANY_MODEL, ChatCompletionRequest, FetchRequest, JobStatus, Lease
from pydantic import ValidationError

from openbeepboop_server.db.safe_text import db_text, db_texts
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue import transitions
from openbeepboop_server.queue.ids import new_lease_token

logger = logging.getLogger(__name__)

_COLUMNS = "seq, id, model, request, attempts"
_WHERE = "status = :status AND not_before <= :now"


@functools.cache
def _candidate_sql(by_model: bool, dialect: str) -> sa.TextClause:
    """The claim SELECT, spelled out so SQLite is told which index to walk.

    Built once per shape (a statement built per claim costs more CPU than
    the read).

    Without ``INDEXED BY``, SQLite's planner (which has no statistics) may pick
    another index on ``status`` and then sort every QUEUED row to apply
    ``ORDER BY seq`` - fine at 1k queued, ruinous at 1M.
    """
    index = "ix_jobs_claim" if by_model else "ix_jobs_status_seq"
    table = f"jobs INDEXED BY {index}" if dialect == "sqlite" else "jobs"
    where = f"{_WHERE} AND model = :model" if by_model else _WHERE
    lock = " FOR UPDATE SKIP LOCKED" if dialect == "postgresql" else ""
    return sa.text(
        f"SELECT {_COLUMNS} FROM {table} WHERE {where} ORDER BY seq LIMIT :limit{lock}"  # noqa: S608 - fixed fragments only
    )


def _candidates(conn: sa.Connection, models: list[str], limit: int, now: float) -> list[Any]:
    params: dict[str, Any] = {"status": JobStatus.QUEUED.value, "now": now, "limit": limit}
    dialect = conn.dialect.name
    if ANY_MODEL in models:
        return list(conn.execute(_candidate_sql(False, dialect), params))
    by_model = _candidate_sql(True, dialect)
    heads = [
        list(conn.execute(by_model, {**params, "model": model})) for model in dict.fromkeys(models)
    ]
    if len(heads) == 1:
        return heads[0]
    return list(heapq.merge(*heads, key=lambda row: row.seq))[:limit]


@dataclass(frozen=True)
class Claimed:
    """A lease just taken, its request still the stored JSON text.

    The text is parsed only once the claim's transaction has committed
    (:func:`read_claimed`): parsing a large request inside the transaction
    would hold the one SQLite writer (and on a small call, the event loop)
    for as long as the parse takes.
    """

    seq: int
    job_id: str
    lease_token: str
    lease_expires_at: float
    lease_seconds: float
    attempt: int
    model: str
    request_json: str


def claim_jobs(
    conn: sa.Connection,
    caller: Caller,
    fetch: FetchRequest,
    *,
    now: float,
    lease_seconds: float,
) -> list[Claimed]:
    """Lease up to ``fetch.max_jobs`` claimable jobs of ``fetch.models`` to the caller."""
    rows = _candidates(conn, db_texts(fetch.models), fetch.max_jobs, now)
    if not rows:
        return []
    expires = now + lease_seconds
    node_id = db_text(fetch.node_id)
    updates: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    claimed: list[Claimed] = []
    for row in rows:
        token = new_lease_token()
        attempt = row.attempts + 1
        updates.append(
            {
                "b_seq": row.seq,
                "b_token": token,
                "b_node": node_id,
                "b_key": caller.key_id,
                "b_expires": expires,
                "b_attempts": attempt,
                "b_now": now,
            }
        )
        history.append(
            {
                "token": token,
                "job_seq": row.seq,
                "node_id": node_id,
                "key_id": caller.key_id,
                "attempt": attempt,
                "claimed_at": now,
            }
        )
        claimed.append(
            Claimed(row.seq, row.id, token, expires, lease_seconds, attempt, row.model, row.request)
        )
    transitions.start(conn, updates, history)
    return claimed


def read_claimed(claimed: list[Claimed], *, now: float) -> tuple[list[Lease], list[dict[str, Any]]]:
    """The leases of ``claimed``, and the rows to fail for requests this version cannot read.

    Called after the claim committed. A request stored by an older version
    under looser rules can be run by no node, and leaving it claimable would
    hand it out (and fail here) forever: it is failed instead
    (:func:`.transitions.fail_unreadable`, guarded by its lease token).
    """
    leases: list[Lease] = []
    unreadable: list[dict[str, Any]] = []
    for item in claimed:
        try:
            request = ChatCompletionRequest.model_validate_json(item.request_json)
        except ValidationError as exc:
            logger.warning("job %s has a request this version cannot read: %s", item.job_id, exc)
            unreadable.append(
                {
                    "b_seq": item.seq,
                    "b_token": item.lease_token,
                    "b_message": f"the stored request is no longer valid: {exc}",
                    "b_type": transitions.UNREADABLE_TYPE,
                    "b_now": now,
                }
            )
            continue
        leases.append(
            Lease(
                job_id=item.job_id,
                lease_token=item.lease_token,
                lease_expires_at=item.lease_expires_at,
                lease_seconds=item.lease_seconds,
                attempt=item.attempt,
                model=item.model,
                request=request,
            )
        )
    return leases, unreadable


@functools.cache
def _claimable_sql(by_model: bool, dialect: str) -> sa.TextClause:
    """Which models the next claimable jobs are of: the claim's walk, reading no request."""
    index = "ix_jobs_claim" if by_model else "ix_jobs_status_seq"
    table = f"jobs INDEXED BY {index}" if dialect == "sqlite" else "jobs"
    where = f"{_WHERE} AND model = :model" if by_model else _WHERE
    return sa.text(f"SELECT model FROM {table} WHERE {where} ORDER BY seq LIMIT :limit")  # noqa: S608 - fixed fragments only


def claimable_models(conn: sa.Connection, demand: dict[str, int], *, now: float) -> list[str]:
    """One model name per claimable job, up to ``demand[model]`` jobs per model.

    ``demand`` counts the parked fetchers per model (``*``: any model). What a
    claim would find, read the way a claim reads it (one index walk per
    model, ``LIMIT`` the demand), so the cost follows the number of parked
    fetchers, never the length of the queue.
    """
    params: dict[str, Any] = {"status": JobStatus.QUEUED.value, "now": now}
    dialect = conn.dialect.name
    found: list[str] = []
    for model, limit in demand.items():
        if model == ANY_MODEL:
            rows = conn.execute(_claimable_sql(False, dialect), {**params, "limit": limit})
        else:
            sql = _claimable_sql(True, dialect)
            rows = conn.execute(sql, {**params, "limit": limit, "model": db_text(model)})
        found.extend(rows.scalars())
    return found


def next_claimable_at(conn: sa.Connection, models: list[str], *, now: float) -> float | None:
    """The earliest ``not_before`` still ahead among QUEUED jobs of ``models``.

    Reads only the partial index of backed-off jobs, so it costs the number
    of jobs waiting for a retry, never the length of the queue.
    """
    table = "jobs INDEXED BY ix_jobs_backoff" if conn.dialect.name == "sqlite" else "jobs"
    # The literal terms are the index's own predicate, which is what lets it be used.
    sql = (
        f"SELECT min(not_before) FROM {table} "  # noqa: S608 - fixed fragments only
        "WHERE status = 'QUEUED' AND not_before > 0 AND not_before > :now"
    )
    params: dict[str, Any] = {"now": now}
    statement = sa.text(sql)
    if ANY_MODEL not in models:
        statement = sa.text(sql + " AND model IN :models").bindparams(
            sa.bindparam("models", expanding=True)
        )
        params["models"] = db_texts(models)
    value = conn.execute(statement, params).scalar()
    return None if value is None else float(value)
