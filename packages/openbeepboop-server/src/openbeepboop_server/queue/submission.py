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

from openbeepboop_server.db.database import IN_CHUNK
from openbeepboop_server.db.safe_text import db_text, idempotency_column
from openbeepboop_server.db.tables import idempotency_keys, jobs
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue.ids import new_job_id
from openbeepboop_server.queue.views import job_view

_insert_jobs = jobs.insert()


def insert_jobs(
    conn: sa.Connection,
    caller: Caller,
    requests: Sequence[ChatCompletionRequest],
    *,
    now: float,
    max_attempts: int,
    batch: tuple[str, Sequence[str]] | None = None,
) -> list[Job]:
    """Insert one QUEUED job per request; their :class:`Job` views in order.

    ``batch``: the OpenAI batch the requests are the lines of (its id and
    each line's ``custom_id``); the jobs record it, numbering lines from 1.
    """
    queued = JobStatus.QUEUED.value
    rows: list[dict[str, Any]] = [
        {
            "id": new_job_id(),
            "owner_key_id": caller.key_id,
            "model": db_text(request.model),
            "status": queued,
            "request": request.model_dump_json(exclude_unset=True),
            "attempts": 0,
            "max_attempts": max_attempts,
            "not_before": 0.0,
            "created_at": now,
            "updated_at": now,
        }
        for request in requests
    ]
    if batch is not None:
        batch_id, custom_ids = batch
        for line, (row, custom_id) in enumerate(zip(rows, custom_ids, strict=True), start=1):
            row.update(batch_id=batch_id, batch_line=line, custom_id=custom_id)
    if rows:
        conn.execute(_insert_jobs, rows)
    return [job_view(row["id"], queued, row["model"], now) for row in rows]


def insert_batch_lines(
    conn: sa.Connection,
    caller: Caller,
    lines: Sequence[tuple[str, str, str]],
    *,
    now: float,
    max_attempts: int,
    batch_id: str,
    first_line: int,
    not_before: float,
) -> None:
    """Insert one QUEUED job per line of an OpenAI batch, its request already serialised.

    ``lines``: ``(custom_id, model, request JSON)`` in input order, numbered
    from ``first_line``; the JSON is what :func:`insert_jobs` would store
    (``model_dump_json(exclude_unset=True)``), made once while validating.
    ``not_before`` past 0 holds the jobs back from claims (:mod:`.batches`).
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
        }
        for line, (custom_id, model, request) in enumerate(lines, start=first_line)
    ]
    if rows:
        conn.execute(_insert_jobs, rows)


def find_idempotent(
    conn: sa.Connection, caller: Caller, key: str, *, forget_spent: bool = False
) -> list[Job] | None:
    """The jobs an earlier request with this key created, or None if it is new.

    A key whose jobs were all purged is spent: it counts as new, and with
    ``forget_spent`` (inside a write transaction) its record is dropped.
    """
    stored = conn.execute(
        sa.select(idempotency_keys.c.job_ids).where(
            idempotency_keys.c.owner_key_id == caller.key_id,
            idempotency_keys.c.key == idempotency_column(key),
        )
    ).scalar()
    if stored is None:
        return None
    ids: list[str] = json.loads(stored)
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
    conn: sa.Connection, caller: Caller, key: str, created: list[Job], now: float
) -> None:
    """Record which jobs this key created (a concurrent twin fails on the primary key)."""
    conn.execute(
        idempotency_keys.insert().values(
            owner_key_id=caller.key_id,
            key=idempotency_column(key),
            job_ids=json.dumps([job.id for job in created]),
            created_at=now,
        )
    )
