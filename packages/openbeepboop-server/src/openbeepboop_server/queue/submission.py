"""Putting jobs on the queue, one or many per transaction, idempotently.

The hot path does as little per row as possible: the request is serialised
once by pydantic's Rust serializer (``model_dump_json(exclude_unset=True)``
gives exactly ``request.to_payload()`` as JSON) and rows go to the driver in
one ``executemany``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from openbeepboop_schemas import ChatCompletionRequest, Job, JobStatus

from openbeepboop_server.db import notify
from openbeepboop_server.db.database import IN_CHUNK
from openbeepboop_server.db.driver_sql import DriverStatement
from openbeepboop_server.db.safe_text import db_text, idempotency_column
from openbeepboop_server.db.tables import api_keys, idempotency_keys, jobs
from openbeepboop_server.errors import IdempotencyKeyReused, PriorityAboveCeiling
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue.fair_share import claim_rank
from openbeepboop_server.queue.ids import new_job_id
from openbeepboop_server.queue.policy import DEFAULT_PRIORITY_AGING_MINUTES
from openbeepboop_server.queue.views import job_view

_insert_jobs = jobs.insert()
#: A submit's insert, on the driver's cursor (db/driver_sql.py).
_INSERT_JOBS = DriverStatement(_insert_jobs)
#: Native fields kept beside the job, never in the request a node forwards to the LLM.
_NATIVE_FIELDS = {"priority"}


def check_priority(conn: sa.Connection, caller: Caller, priority: int) -> None:
    """Refuse a ``priority`` above the caller's ``max_priority`` (nothing is stored then).

    Read only when a priority above the default 0 is asked for: the default
    ceiling is 0, and a priority at or below 0 needs no permission.
    """
    ceiling = conn.execute(
        sa.select(api_keys.c.max_priority).where(api_keys.c.id == caller.key_id)
    ).scalar()
    ceiling = 0 if ceiling is None else int(ceiling)
    if priority > ceiling:
        raise PriorityAboveCeiling(priority, ceiling)


def insert_jobs(
    conn: sa.Connection,
    caller: Caller,
    requests: Sequence[ChatCompletionRequest],
    *,
    now: float,
    max_attempts: int,
    batch: tuple[str, Sequence[str]] | None = None,
    aging_seconds: float = DEFAULT_PRIORITY_AGING_MINUTES * 60,
) -> list[Job]:
    """Insert one QUEUED job per request; their :class:`Job` views in order.

    ``batch``: the OpenAI batch the requests are the lines of (its id and
    each line's ``custom_id``); the jobs record it, numbering lines from 1.
    Raises :class:`.PriorityAboveCeiling` (before inserting anything) when a
    request's ``priority`` is above the caller's ``max_priority``.
    """
    queued = JobStatus.QUEUED.value
    highest = max((request.priority or 0 for request in requests), default=0)
    if highest > 0:
        check_priority(conn, caller, highest)
    rows: list[dict[str, Any]] = [
        {
            "id": new_job_id(),
            "owner_key_id": caller.key_id,
            "model": db_text(request.model),
            "status": queued,
            "request": node_request_json(request),
            "attempts": 0,
            "max_attempts": max_attempts,
            "not_before": 0.0,
            "created_at": now,
            "updated_at": now,
            "priority": request.priority or 0,
            "claim_rank": claim_rank(now, request.priority or 0, aging_seconds),
        }
        for request in requests
    ]
    if batch is not None:
        batch_id, custom_ids = batch
        for line, (row, custom_id) in enumerate(zip(rows, custom_ids, strict=True), start=1):
            row.update(batch_id=batch_id, batch_line=line, custom_id=custom_id)
    if rows:
        _INSERT_JOBS.execute(conn, rows)
        # Other replicas' fetchers of these models wake when this commits (db/notify.py).
        notify.jobs_available(conn, [row["model"] for row in rows])
    return [job_view(row["id"], queued, row["model"], now) for row in rows]


#: One validated line of an OpenAI batch: ``(custom_id, model, priority, request JSON)``.
SpooledLine = tuple[str, str, int, str]


def node_request_json(request: ChatCompletionRequest) -> str:
    """The request as a job stores it: what the node sends on, native fields left out."""
    return request.model_dump_json(exclude_unset=True, exclude=_NATIVE_FIELDS)


def insert_batch_lines(
    conn: sa.Connection,
    caller: Caller,
    lines: Sequence[SpooledLine],
    *,
    now: float,
    max_attempts: int,
    batch_id: str,
    first_line: int,
    not_before: float,
    aging_seconds: float = DEFAULT_PRIORITY_AGING_MINUTES * 60,
) -> None:
    """Insert one QUEUED job per line of an OpenAI batch, its request already serialised.

    ``lines`` are in input order, numbered from ``first_line``; the JSON is
    :func:`node_request_json`, made once while validating, and the priority was
    checked against the owner's ceiling before the first chunk (:mod:`.batches`).
    ``not_before`` past 0 holds the jobs back from claims.
    """
    queued = JobStatus.QUEUED.value
    rows: list[dict[str, Any]] = [
        {
            "id": new_job_id(),
            "owner_key_id": caller.key_id,
            "model": db_text(model),
            "status": queued,
            "request": request,
            "attempts": 0,
            "max_attempts": max_attempts,
            "not_before": not_before,
            "created_at": now,
            "updated_at": now,
            "batch_id": batch_id,
            "batch_line": line,
            "custom_id": custom_id,
            "priority": priority,
            "claim_rank": claim_rank(now, priority, aging_seconds),
        }
        for line, (custom_id, model, priority, request) in enumerate(lines, start=first_line)
    ]
    if rows:
        conn.execute(_insert_jobs, rows)


def find_idempotent(
    conn: sa.Connection,
    caller: Caller,
    key: str,
    *,
    request_hash: str | None = None,
    forget_spent: bool = False,
) -> list[Job] | None:
    """The jobs an earlier request with this key created, or None if it is new.

    A key whose jobs were all purged is spent: it counts as new, and with
    ``forget_spent`` (inside a write transaction) its record is dropped.
    IdempotencyKeyReused if the key was first used for another request
    (``request_hash`` differs from the one recorded): answering with that
    request's jobs would answer a question nobody asked.
    """
    stored = conn.execute(
        sa.select(idempotency_keys.c.job_ids, idempotency_keys.c.request_hash).where(
            idempotency_keys.c.owner_key_id == caller.key_id,
            idempotency_keys.c.key == idempotency_column(key),
        )
    ).first()
    if stored is None:
        return None
    ids: list[str] = json.loads(stored.job_ids)
    found: dict[str, Job] = {}
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        for row in conn.execute(
            sa.select(jobs.c.id, jobs.c.status, jobs.c.model, jobs.c.created_at).where(
                jobs.c.id.in_(chunk)
            )
        ):
            found[row.id] = job_view(row.id, row.status, row.model, row.created_at)
    if not found:
        if forget_spent:
            forget_idempotent(conn, caller, key)
        return None
    first_hash = stored.request_hash
    if request_hash is not None and first_hash is not None and first_hash != request_hash:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was first sent with a different request; nothing was "
            "queued (use a new key for a new request, the same key only to retry one)"
        )
    return [found[job_id] for job_id in ids if job_id in found]


def forget_idempotent(conn: sa.Connection, caller: Caller, key: str) -> None:
    """Drop the record of an idempotency key."""
    conn.execute(
        idempotency_keys.delete().where(
            idempotency_keys.c.owner_key_id == caller.key_id,
            idempotency_keys.c.key == idempotency_column(key),
        )
    )


def remember_idempotent(
    conn: sa.Connection,
    caller: Caller,
    key: str,
    created: list[Job],
    now: float,
    request_hash: str | None = None,
) -> None:
    """Record which jobs this key created, and for which request.

    A concurrent twin fails on the primary key.
    """
    conn.execute(
        idempotency_keys.insert().values(
            owner_key_id=caller.key_id,
            key=idempotency_column(key),
            job_ids=json.dumps([job.id for job in created]),
            created_at=now,
            request_hash=request_hash,
        )
    )
