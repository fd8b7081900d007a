"""Reading jobs: one, a poll's many, a listing's page, the queue's depth.

Rows of ``jobs`` become the wire models users read (:class:`PollEntry`,
:class:`Job`, :class:`JobList`). Also the one rule of visibility: a USER (or
NODE) key sees only the jobs it submitted, an ADMIN key sees all; everything
else is indistinguishable from an id that never existed. Nothing here writes.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from openbeepboop_schemas import (
    BATCH_ID_PREFIX,
    FILE_ID_PREFIX,
    JOB_ID_PREFIX,
    NOT_FOUND,
    ChatCompletion,
    Job,
    JobError,
    JobList,
    JobStatus,
    PollEntry,
    Role,
)
from pydantic import ValidationError

from openbeepboop_server.db.database import IN_CHUNK
from openbeepboop_server.db.driver_sql import DriverStatement
from openbeepboop_server.db.safe_text import db_text, db_texts
from openbeepboop_server.db.tables import jobs
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue.ids import TIME_HEX_DIGITS
from openbeepboop_server.queue.statuses import TERMINAL_IN_SQL

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
    jobs.c.lease_node_id,
)


#: Largest page :func:`list_page` returns, whatever is asked.
MAX_LIST_LIMIT = 1_000

#: Poll rows by id (``ids``, expanded when executed), built once: building a
#: select with its IN list on every call cost ~150 us of CPU, three times the
#: read itself (docs/performance.md, "Statements built once").
_POLL_BY_IDS = sa.select(*POLL_COLUMNS).where(jobs.c.id.in_(sa.bindparam("ids", expanding=True)))
_POLL_BY_IDS_OWNED = _POLL_BY_IDS.where(jobs.c.owner_key_id == sa.bindparam("owner"))
#: The watched jobs (``ids``) a delivery has just finished, with their owners (built once
#: too), read on the driver's cursor inside the delivery's transaction (db/driver_sql.py).
_FINISHED_BY_IDS = DriverStatement(
    sa.select(jobs.c.owner_key_id, *POLL_COLUMNS).where(
        jobs.c.id.in_(sa.bindparam("ids", expanding=True)), jobs.c.status.in_(TERMINAL_IN_SQL)
    )
)


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
        # Which node runs it, for the owner's status line; a finished job's last
        # lease is history the entry does not need.
        node_id=row.lease_node_id if row.status == JobStatus.PROCESSING.value else None,
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


def entry(conn: sa.Connection, caller: Caller, job_id: str) -> PollEntry | None:
    """One job's entry, or None if the caller may not see it."""
    row = visible_rows(conn, caller, [db_text(job_id)]).first()
    return None if row is None else poll_entry(row)


def poll_entries(conn: sa.Connection, caller: Caller, ids: list[str]) -> list[PollEntry]:
    """One entry per id, in order; ``NOT_FOUND`` for ids the caller may not see."""
    wanted = db_texts(list(dict.fromkeys(ids)))
    found: dict[str, PollEntry] = {}
    for start in range(0, len(wanted), IN_CHUNK):
        for row in visible_rows(conn, caller, wanted[start : start + IN_CHUNK]):
            found[row.id] = poll_entry(row)
    return [found.get(db_text(job_id)) or not_found(job_id) for job_id in ids]


def finished_entries(conn: sa.Connection, ids: list[str]) -> list[tuple[int, PollEntry]]:
    """The entries of those of ``ids`` that are terminal, each with the key that owns it."""
    finished: list[tuple[int, PollEntry]] = []
    for start in range(0, len(ids), IN_CHUNK):
        rows = _FINISHED_BY_IDS.all(conn, {"ids": db_texts(ids[start : start + IN_CHUNK])})
        finished.extend((row.owner_key_id, poll_entry(row)) for row in rows)
    return finished


_FINISHED_IDS = (
    sa.select(jobs.c.id)
    .where(jobs.c.id.in_(sa.bindparam("ids", expanding=True)))
    .where(jobs.c.status.in_(TERMINAL_IN_SQL))
)


def finished_ids(conn: sa.Connection, ids: list[str]) -> list[str]:
    """Those of ``ids`` that are terminal (the long-polls' periodic re-check: ids only)."""
    finished: list[str] = []
    for start in range(0, len(ids), IN_CHUNK):
        rows = conn.execute(_FINISHED_IDS, {"ids": db_texts(ids[start : start + IN_CHUNK])})
        finished.extend(rows.scalars())
    return finished


_OLDEST_QUEUED = (
    sa.select(jobs.c.created_at)
    .where(jobs.c.status == sa.bindparam("status"))
    .order_by(jobs.c.seq)
    .limit(1)
)


def oldest_queued_at(conn: sa.Connection) -> float | None:
    """When the job at the head of the queue was submitted (one index entry), or None."""
    value = conn.execute(_OLDEST_QUEUED, {"status": JobStatus.QUEUED.value}).scalar()
    return None if value is None else float(value)


class CursorError(ValueError):
    """An ``after`` a listing cannot continue from: the page would be a guess.

    ``status`` and ``code`` are the error envelope's: ``400 invalid_cursor``
    (not an id of this listing at all) or ``404 cursor_not_found`` (an id of
    the right shape whose item is gone and whose id does not say where it was).
    """

    def __init__(self, after: str, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.after = after
        self.status = status
        self.code = code


#: What ``after`` may look like in each listing (also their OpenAPI patterns):
#: the ids :func:`openbeepboop_server.queue.ids.new_job_id`,
#: ``files.new_file_id`` and ``batches.new_batch_id`` make.
JOB_CURSOR = "^" + JOB_ID_PREFIX + "[0-9a-f]{32}$"
FILE_CURSOR = "^" + FILE_ID_PREFIX + "[0-9a-f]{24}$"
BATCH_CURSOR = "^" + BATCH_ID_PREFIX + "[0-9a-f]{24}$"


def _not_an_id(after: str, kind: str) -> CursorError:
    return CursorError(
        after,
        400,
        "invalid_cursor",
        f"'after': '{after}' is not a {kind} id; pass the last id of the previous page",
    )


#: How far past this host's clock an id's millisecond may be and still have
#: been made (another replica's clock may run a little ahead).
_CLOCK_SKEW_MS = 24 * 3600 * 1000


def seq_after_vanished(
    conn: sa.Connection,
    ids: sa.ColumnElement[str],
    seqs: sa.ColumnElement[int],
    after: str,
    prefix: str,
    kind: str,
    shape: str,
    *,
    always_timed: bool = False,
) -> int | None:
    """The ``seq`` a page after the vanished item ``after`` lists below; None: no bound.

    The item was purged or deleted since the last page, but its id still says
    when it was made (queue/ids.py: the first 12 hex digits are the
    millisecond), and ids are made in time order: the listing continues below
    the first item made in a later millisecond, so a cursor that vanished
    between two pages loses nothing. Only items made at about the same moment
    (its millisecond, or several replicas whose clocks or requests were that
    far apart) may be shown again or, rarely, skipped. ``shape`` is the
    listing's cursor pattern: an ``after`` not of it is a 400; one whose time
    cannot be right (a file or batch id made before ids were time-ordered,
    almost always far in the future) is a 404, since nothing says where it
    was, unless ``always_timed`` (job ids always were): then it is a position
    like any other.
    """
    if re.fullmatch(shape, after) is None:
        raise _not_an_id(after, kind)
    made_ms = int(after[len(prefix) : len(prefix) + TIME_HEX_DIGITS], 16)
    if not always_timed and made_ms > time.time() * 1000 + _CLOCK_SKEW_MS:
        raise CursorError(
            after,
            404,
            "cursor_not_found",
            f"'after': no {kind} '{after}' to continue after (deleted since the last page,"
            " or not one of yours); list again from the first page",
        )
    later = f"{prefix}{made_ms + 1:0{TIME_HEX_DIGITS}x}"
    bound = conn.execute(sa.select(seqs).where(ids >= later).order_by(ids).limit(1)).scalar()
    return None if bound is None else int(bound)


def _cursor_seq(conn: sa.Connection, after: str) -> int | None:
    """The ``seq`` the page after the job ``after`` lists below; None: no bound.

    The job's own ``seq`` while it exists, whoever owns it: answering a key
    differently for another key's job than for a missing one would tell it
    which ids exist. Once it is gone, where its id says it was
    (:func:`seq_after_vanished`).
    """
    seq = conn.execute(sa.select(jobs.c.seq).where(jobs.c.id == db_text(after))).scalar()
    if seq is not None:
        return int(seq)
    return seq_after_vanished(
        conn, jobs.c.id, jobs.c.seq, after, JOB_ID_PREFIX, "job", JOB_CURSOR, always_timed=True
    )


def list_page(
    conn: sa.Connection,
    caller: Caller,
    *,
    status: JobStatus | None,
    limit: int,
    after: str | None,
    batch_id: str | None = None,
) -> JobList:
    """The caller's jobs (all jobs for ADMIN), newest first, ``limit`` per page.

    ``after`` is the ``next_after`` of the previous page; the next page goes on
    from where that job was even if it has since been purged (:func:`_cursor_seq`).
    CursorError if ``after`` is not a job id.
    """
    limit = max(1, min(limit, MAX_LIST_LIMIT))
    query = sa.select(*POLL_COLUMNS).where(visible_to(caller))
    if status is not None:
        query = query.where(jobs.c.status == JobStatus(status).value)
    if batch_id is not None:
        query = query.where(jobs.c.batch_id == db_text(batch_id))
    if after is not None:
        cursor = _cursor_seq(conn, after)
        if cursor is not None:
            query = query.where(jobs.c.seq < cursor)
    rows = conn.execute(query.order_by(jobs.c.seq.desc()).limit(limit + 1)).all()
    page = [poll_entry(row) for row in rows[:limit]]
    has_more = len(rows) > limit
    return JobList(data=page, has_more=has_more, next_after=page[-1].id if has_more else None)


def count_by_status(conn: sa.Connection, statuses: Iterable[JobStatus]) -> list[tuple[str, int]]:
    """Job counts by status (no model), for ``statuses`` that have any jobs."""
    query = (
        sa.select(jobs.c.status, sa.func.count())
        .where(jobs.c.status.in_([JobStatus(s).value for s in statuses]))
        .group_by(jobs.c.status)
        .order_by(jobs.c.status)
    )
    return [(row[0], int(row[1])) for row in conn.execute(query).all()]


def depth(conn: sa.Connection, statuses: Iterable[JobStatus] | None) -> list[tuple[str, str, int]]:
    """Job counts by (status, model), optionally only for some statuses.

    Reads the (status, model, seq) index; cost grows with the rows counted,
    so a metrics scrape may prefer the live statuses only.
    """
    query = sa.select(jobs.c.status, jobs.c.model, sa.func.count())
    if statuses is not None:
        query = query.where(jobs.c.status.in_([JobStatus(s).value for s in statuses]))
    rows = conn.execute(
        query.group_by(jobs.c.status, jobs.c.model).order_by(jobs.c.status, jobs.c.model)
    ).all()
    return [(row[0], row[1], int(row[2])) for row in rows]
