"""Rows of ``jobs`` as the wire models users read (:class:`PollEntry`, :class:`Job`).

Also the one rule of visibility: a USER (or NODE) key sees only the jobs it
submitted, an ADMIN key sees all; everything else is indistinguishable from an
id that never existed.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlalchemy as sa
from openbeepboop_schemas import (
    NOT_FOUND,
    ChatCompletion,
    Job,
    JobError,
    JobStatus,
    PollEntry,
    Role,
)
from pydantic import ValidationError

from openbeepboop_server.db.tables import jobs
from openbeepboop_server.keys import Caller

logger = logging.getLogger(__name__)

POLL_COLUMNS = (
    jobs.c.seq,
    jobs.c.id,
    jobs.c.status,
    jobs.c.model,
    jobs.c.result,
    jobs.c.error_message,
    jobs.c.error_type,
    jobs.c.attempts,
    jobs.c.created_at,
    jobs.c.started_at,
    jobs.c.completed_at,
)


#: Poll rows by id (``ids``, expanded when executed), built once: building a
#: select with its IN list on every call cost ~150 us of CPU, three times the
#: read itself (docs/performance.md, seventh pass).
_POLL_BY_IDS = sa.select(*POLL_COLUMNS).where(jobs.c.id.in_(sa.bindparam("ids", expanding=True)))
_POLL_BY_IDS_OWNED = _POLL_BY_IDS.where(jobs.c.owner_key_id == sa.bindparam("owner"))


def visible_rows(conn: sa.Connection, caller: Caller, ids: list[str]) -> sa.CursorResult[Any]:
    """Rows of :data:`POLL_COLUMNS` for those of ``ids`` (non-empty) that ``caller`` may see."""
    if caller.role is Role.ADMIN:
        return conn.execute(_POLL_BY_IDS, {"ids": ids})
    return conn.execute(_POLL_BY_IDS_OWNED, {"ids": ids, "owner": caller.key_id})


def visible_to(caller: Caller) -> sa.ColumnElement[bool]:
    """The WHERE clause limiting ``jobs`` to what ``caller`` may see."""
    if caller.role is Role.ADMIN:
        return sa.true()
    return jobs.c.owner_key_id == caller.key_id


def may_see(caller: Caller, owner_key_id: int) -> bool:
    """:func:`visible_to` for one job already read: ADMIN, or the key that owns it."""
    return caller.role is Role.ADMIN or caller.key_id == owner_key_id


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


def poll_entry(row: Any) -> PollEntry:
    """A :class:`PollEntry` from a row holding :data:`POLL_COLUMNS`."""
    error = None
    if row.error_message is not None:
        error = JobError(message=row.error_message, type=row.error_type or "error")
    return PollEntry(
        id=row.id,
        status=row.status,
        completed=row.status == JobStatus.COMPLETED.value,
        model=row.model,
        result=_completion(row.id, row.result) if row.result else None,
        error=error,
        attempts=row.attempts,
        created_at=_seconds(row.created_at),
        started_at=_seconds(row.started_at),
        completed_at=_seconds(row.completed_at),
    )


def _completion(job_id: str, stored: str) -> ChatCompletion:
    try:
        return ChatCompletion.model_validate_json(stored)
    except ValidationError:
        # Accepted by an older version under looser rules: show it as stored
        # rather than failing every poll that names this job.
        logger.warning("job %s has a stored result this version cannot validate", job_id)
        return ChatCompletion.model_construct(**json.loads(stored))


def not_found(job_id: str) -> PollEntry:
    """The entry for an id the caller may not see (or that does not exist)."""
    return PollEntry(id=job_id, status=NOT_FOUND)


def job_view(job_id: str, status: str, model: str, created_at: float) -> Job:
    """The short :class:`Job` answer to a submit."""
    return Job(id=job_id, status=JobStatus(status), model=model, created_at=int(created_at))
