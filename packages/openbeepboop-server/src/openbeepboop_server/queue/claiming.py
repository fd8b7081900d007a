"""Atomic claims: which QUEUED jobs become leases, many in one transaction.

The rows change status through :func:`.transitions.start` (and
:func:`.transitions.fail_unreadable`); this module picks them.

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


def claim_jobs(
    conn: sa.Connection,
    caller: Caller,
    fetch: FetchRequest,
    *,
    now: float,
    lease_seconds: float,
) -> list[Lease]:
    """Lease up to ``fetch.max_jobs`` claimable jobs of ``fetch.models`` to the caller."""
    rows = _candidates(conn, db_texts(fetch.models), fetch.max_jobs, now)
    if not rows:
        return []
    expires = now + lease_seconds
    node_id = db_text(fetch.node_id)
    updates: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    claimed: list[Lease] = []
    unreadable: list[dict[str, Any]] = []
    for row in rows:
        try:
            request = ChatCompletionRequest.model_validate_json(row.request)
        except ValidationError as exc:
            # Stored by an older version under looser rules: no node can run it,
            # and leaving it QUEUED would hand it out (and fail here) forever.
            logger.warning("job %s has a request this version cannot read: %s", row.id, exc)
            unreadable.append(
                {
                    "b_seq": row.seq,
                    "b_message": f"the stored request is no longer valid: {exc}",
                    "b_type": transitions.UNREADABLE_TYPE,
                    "b_now": now,
                }
            )
            continue
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
            Lease(
                job_id=row.id,
                lease_token=token,
                lease_expires_at=expires,
                lease_seconds=lease_seconds,
                attempt=attempt,
                model=row.model,
                request=request,
            )
        )
    transitions.fail_unreadable(conn, unreadable)
    transitions.start(conn, updates, history)
    return claimed


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
