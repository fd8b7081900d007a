"""Atomic claims: which QUEUED jobs become leases, many in one transaction.

The rows change status through :func:`.transitions.start` (and
:func:`.transitions.fail_unreadable`); this module picks them. No request is
parsed inside the claim's transaction: the stored JSON comes out as text and
is read after the commit (:func:`read_claimed`).

On SQLite the caller holds the one writer (``BEGIN IMMEDIATE`` plus the
in-process lock), so select-then-update cannot race. On PostgreSQL each
owner's jobs are read ``FOR UPDATE SKIP LOCKED``: concurrent claimers (other
replicas) skip rows someone else is taking instead of waiting for them.

Which jobs, in which order, is :mod:`.fair_share`'s rule, read through the
indexes by :mod:`.fair_claim`: the cost of a claim follows ``max_jobs`` and
the number of owners with queued jobs of the model, never the number of jobs
queued.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from openbeepboop_schemas import ANY_MODEL, ChatCompletionRequest, FetchRequest, JobStatus, Lease
from pydantic import ValidationError

from openbeepboop_server.db.safe_text import db_text, db_texts
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue import transitions
from openbeepboop_server.queue.fair_claim import fair_candidates, queued_among, store_turns
from openbeepboop_server.queue.ids import new_lease_token
from openbeepboop_server.queue.policy import DEFAULT_PRIORITY_AGING_MINUTES

logger = logging.getLogger(__name__)

_WHERE = "status = :status AND not_before <= :now"


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
    aging_seconds: float = DEFAULT_PRIORITY_AGING_MINUTES * 60,
) -> list[Claimed]:
    """Lease up to ``fetch.max_jobs`` claimable jobs of ``fetch.models`` to the caller,
    in claim order (:mod:`.fair_share`)."""
    models = db_texts(fetch.models)
    rows, turns = fair_candidates(conn, models, fetch.max_jobs, now, aging_seconds)
    if not rows or turns is None:
        return []
    expires = now + lease_seconds
    node_id = db_text(fetch.node_id)
    updates: list[dict[str, Any]] = []
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
        claimed.append(
            Claimed(row.seq, row.id, token, expires, lease_seconds, attempt, row.model, row.request)
        )
    transitions.start(conn, updates)
    store_turns(conn, turns)
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
    if ANY_MODEL in demand:
        rows = conn.execute(_claimable_sql(False, dialect), {**params, "limit": demand[ANY_MODEL]})
        found.extend(rows.scalars())
    # Parked fetchers may declare many names with nothing queued: which ones
    # have queued jobs is one statement per chunk of names, not one per name.
    named = {db_text(model): limit for model, limit in demand.items() if model != ANY_MODEL}
    sql = _claimable_sql(True, dialect)
    for model in queued_among(conn, list(named)):
        rows = conn.execute(sql, {**params, "limit": named[model], "model": model})
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
