"""OpenAI batches: created, validated into ordinary jobs, followed, finalised into files.

A batch's lines are ordinary jobs of its owner (``jobs.batch_id``): routed,
retried and shared fairly like any other. This module decides the batch's
own status, OpenAI's::

    validating ─► in_progress ─► finalizing ─► completed
        │              │   └─ window elapsed ─► finalizing ─► expired
        │              └─ cancel ─► cancelling ─► finalizing ─► cancelled
        ├─ a bad line ─► failed          (no job was created)
        └─ cancel ─► cancelled

Validation streams the input file once in bounded memory, checking every
line and spooling the serialised requests to a temporary file; then they are
queued in chunked transactions whose jobs are held back from claims until
the last chunk is in, and one transaction releases them all and moves the
batch to ``in_progress`` (:meth:`BatchService.validate`).
A batch with a bad line has no job; nor has one cancelled while validating.
While a batch runs its ``request_counts`` are counted from its jobs (one
indexed read); at the end they are stored with it.
Every status change is a conditional update (``WHERE status = ...``), so two
replicas driving the same batch never both validate or finalise it. The
jobs' own status changes go through :mod:`.transitions` like every other.
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import sqlalchemy as sa
from openbeepboop_schemas import (
    BATCH_FINAL_STATUSES,
    BATCH_ID_PREFIX,
    PURPOSE_BATCH,
    PURPOSE_BATCH_OUTPUT,
    Batch,
    BatchErrors,
    BatchLineError,
    BatchList,
    BatchRequestCounts,
    ChatCompletionRequest,
    JobStatus,
    Role,
)
from pydantic_core import from_json, to_json
from sqlalchemy.exc import IntegrityError

from openbeepboop_server import finite_json
from openbeepboop_server.db import notify
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.safe_text import db_text, idempotency_column
from openbeepboop_server.db.tables import batches, files, jobs
from openbeepboop_server.errors import IdempotencyKeyReused, PriorityAboveCeiling, ServerError
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue import leases, transitions
from openbeepboop_server.queue.batch_lines import LineParser, split_lines, validate_lines
from openbeepboop_server.queue.batch_output import CANCELLED_CODE, EXPIRED_CODE, split_rows
from openbeepboop_server.queue.files import FileGoneError, FileStore
from openbeepboop_server.queue.ids import new_time_ordered_id
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.quotas import admit
from openbeepboop_server.queue.submission import (
    SpooledLine,
    check_priority,
    insert_batch_lines,
    node_request_json,
)
from openbeepboop_server.queue.views import BATCH_CURSOR, may_see, seq_after_vanished

logger = logging.getLogger(__name__)

VALIDATING, IN_PROGRESS, FINALIZING = "validating", "in_progress", "finalizing"
COMPLETED, FAILED, EXPIRED = "completed", "failed", "expired"
CANCELLING, CANCELLED = "cancelling", "cancelled"
#: Statuses the driver still has work for.
ACTIVE = (VALIDATING, IN_PROGRESS, CANCELLING, FINALIZING)
#: Rows per page while writing output files.
OUTPUT_PAGE = 1000
#: Output files are spooled in memory up to this size, then on disk.
SPOOL_BYTES = 8 * 1024 * 1024
#: Largest page of :meth:`BatchService.list_page`.
MAX_PAGE = 100
#: Lines queued per transaction while a batch is validated: the SQLite writer is
#: released between chunks, and memory holds one chunk of requests, not the file.
INSERT_CHUNK = 2000
#: ``not_before`` of the jobs of a batch still being queued: no claim takes them
#: (claims want ``not_before <= now``) until the batch's last chunk is in.
HELD = 1e15

_LIVE = (JobStatus.QUEUED.value, JobStatus.PROCESSING.value)


class InputFileRefusedError(ServerError):
    """The input file is not a batch input (an output file): nothing was created."""


class NotCancellableError(ServerError):
    """The batch already ended (or is being finalised) without a cancel: nothing changed."""

    def __init__(self, batch_id: str, status: str) -> None:
        super().__init__(
            f"batch {batch_id} is {status}: only a batch still running can be cancelled"
        )
        self.status = status


def new_batch_id() -> str:
    """``batch_`` plus 24 hex characters, time-ordered (:mod:`~openbeepboop_server.queue.ids`)."""
    return new_time_ordered_id(BATCH_ID_PREFIX)


def _spooled(spool: IO[bytes]) -> Iterator[SpooledLine]:
    """``(custom_id, model, priority, request JSON)`` of each line spooled while validating."""
    for head in spool:
        custom_id, model, priority = from_json(head)
        yield custom_id, model, int(priority), spool.readline().rstrip(b"\n").decode()


#: The two files a batch ends with, by the ``kind`` in their name.
_OUTPUT_KINDS = ("output", "error")


def _output_name(batch_id: str, kind: str) -> str:
    """The filename of a batch's output (``kind`` ``output``) or error file."""
    return f"{batch_id}_{kind}.jsonl"


def _owner(key_id: int) -> Caller:
    """The batch's owner as a caller: its jobs are ordinary jobs of that key."""
    return Caller(key_id=key_id, key_name="", role=Role.USER)


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class Advanced:
    """What one driver step changed: jobs to wake polls for, batches that ended."""

    cancelled_jobs: list[str]
    ended: list[str]


class BatchService:
    """Batches for the HTTP layer and the driver; each method is its own transaction(s)."""

    def __init__(
        self,
        db: Database,
        policy: QueuePolicy,
        clock: Callable[[], float] = time.time,
        line_parser: LineParser = finite_json.loads,
    ) -> None:
        self._db = db
        self._policy = policy
        self._clock = clock
        self._line_parser = line_parser
        self._files = FileStore(db, clock)

    # -- users ---------------------------------------------------------------

    def create(
        self,
        caller: Caller,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        window_seconds: float,
        metadata: dict[str, str] | None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> Batch | None:
        """A new ``validating`` batch of an input file ``caller`` may see; None if it may not.

        With ``idempotency_key``, a repeat of a create (same key, same
        ``request_hash``) answers the batch the first one made, whatever the
        file and the quota say now; IdempotencyKeyReused if the key came with
        another request. InputFileRefusedError for a file that is not of
        purpose ``batch``.
        """
        if idempotency_key is not None:
            with self._db.read() as conn:
                earlier = self._by_key(conn, caller, idempotency_key, request_hash)
            if earlier is not None:
                return earlier
        stored = self._files.find(caller, input_file_id)
        if stored is None:
            return None
        if stored.view.purpose != PURPOSE_BATCH:
            raise InputFileRefusedError(
                f"file {input_file_id} has purpose '{stored.view.purpose}': a batch's input "
                f"must be a file uploaded with purpose '{PURPOSE_BATCH}'"
            )
        try:
            return self._insert(
                caller,
                stored.seq,
                input_file_id=input_file_id,
                endpoint=endpoint,
                completion_window=completion_window,
                window_seconds=window_seconds,
                metadata=metadata,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
            )
        except IntegrityError:
            if idempotency_key is None:
                raise
            # A concurrent twin with the same key won the race (PostgreSQL).
            with self._db.read() as conn:
                earlier = self._by_key(conn, caller, idempotency_key, request_hash)
            if earlier is None:
                raise
            return earlier

    def _insert(
        self,
        caller: Caller,
        file_seq: int,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        window_seconds: float,
        metadata: dict[str, str] | None,
        idempotency_key: str | None,
        request_hash: str | None,
    ) -> Batch:
        """Admit and store the batch in one transaction: a twin or a quota sees it at once."""
        now = self._clock()
        batch_id = new_batch_id()
        with self._db.write() as conn:
            if idempotency_key is not None:
                # SQLite: writers take turns, so a twin that committed meanwhile is seen here.
                earlier = self._by_key(conn, caller, idempotency_key, request_hash)
                if earlier is not None:
                    return earlier
            # Every line of the input counts against max_queued now (an upper
            # bound on the jobs it will queue), and the creation is one request.
            # The batch stores that count: until its lines are jobs, quotas.py
            # counts them from it, in the same transaction as this row.
            lines = int(
                conn.execute(sa.select(files.c.lines).where(files.c.seq == file_seq)).scalar_one()
            )
            admit(conn, caller, lines, now=now, lock=not self._db.is_sqlite)
            conn.execute(
                batches.insert().values(
                    id=batch_id,
                    owner_key_id=caller.key_id,
                    status=VALIDATING,
                    endpoint=endpoint,
                    input_file_id=input_file_id,
                    completion_window=completion_window,
                    metadata=None if metadata is None else json.dumps(metadata),
                    created_at=now,
                    expires_at=now + window_seconds,
                    lines=lines,
                    idempotency_key=(
                        None if idempotency_key is None else idempotency_column(idempotency_key)
                    ),
                    request_hash=request_hash,
                )
            )
            return self._view(conn, self._row(conn, batch_id))

    def _by_key(
        self, conn: sa.Connection, caller: Caller, key: str, request_hash: str | None
    ) -> Batch | None:
        """The batch ``caller`` created with this ``Idempotency-Key``, or None."""
        row = conn.execute(
            sa.select(batches).where(
                batches.c.owner_key_id == caller.key_id,
                batches.c.idempotency_key == idempotency_column(key),
            )
        ).first()
        if row is None:
            return None
        if row.request_hash != request_hash:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was first sent with a different request; no batch was "
                "created (use a new key for a new batch, the same key only to retry one)"
            )
        return self._view(conn, row)

    def get(self, caller: Caller, batch_id: str) -> Batch | None:
        """One batch ``caller`` may see, or None."""
        with self._db.read() as conn:
            row = self._row(conn, batch_id)
            if row is None or not may_see(caller, row.owner_key_id):
                return None
            return self._view(conn, row)

    def list_page(self, caller: Caller, *, limit: int, after: str | None) -> BatchList:
        """The caller's batches, newest first, ``limit`` per page after the batch ``after``.

        CursorError if ``after`` names no batch the caller may see.
        """
        limit = max(1, min(limit, MAX_PAGE))
        query = sa.select(batches)
        if caller.role is not Role.ADMIN:
            query = query.where(batches.c.owner_key_id == caller.key_id)
        with self._db.read() as conn:
            if after is not None:
                cursor = self._row(conn, after)
                if cursor is not None and may_see(caller, cursor.owner_key_id):
                    query = query.where(batches.c.seq < cursor.seq)
                else:
                    bound = seq_after_vanished(
                        conn,
                        batches.c.id,
                        batches.c.seq,
                        after,
                        BATCH_ID_PREFIX,
                        "batch",
                        BATCH_CURSOR,
                    )
                    if bound is not None:
                        query = query.where(batches.c.seq < bound)
            rows = conn.execute(query.order_by(batches.c.seq.desc()).limit(limit + 1)).all()
            data = [self._view(conn, row) for row in rows[:limit]]
        return BatchList(
            data=data,
            has_more=len(rows) > limit,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
        )

    def cancel(self, caller: Caller, batch_id: str) -> tuple[Batch | None, list[str]]:
        """Cancel a batch: queued lines stop at once, running ones finish.

        Returns the batch (None if ``caller`` may not see it) and the jobs
        cancelled. A batch already cancelled or cancelling is answered as it
        is (a retried cancel); one that ended otherwise, or is being finalised
        without a cancel, raises NotCancellableError.
        """
        now = self._clock()
        with self._db.write() as conn:
            # Locked on PostgreSQL: a driver's release (validating -> in_progress)
            # committing between this read and the move below would leave the
            # cancel answered and ignored. Locked, it waits and reads the new status.
            row = self._row(conn, batch_id, lock=not self._db.is_sqlite)
            if row is None or not may_see(caller, row.owner_key_id):
                return None, []
            cancelled: list[str] = []
            if row.status == VALIDATING:
                if self._move(
                    conn,
                    batch_id,
                    VALIDATING,
                    CANCELLED,
                    cancelling_at=now,
                    cancelled_at=now,
                    total=0,
                ):
                    self._drop_held(conn, batch_id)
            elif row.status == IN_PROGRESS:
                self._move(conn, batch_id, IN_PROGRESS, CANCELLING, cancelling_at=now)
                cancelled = self._cancel_jobs(conn, batch_id, (JobStatus.QUEUED.value,), now)
            elif row.cancelling_at is None:
                raise NotCancellableError(batch_id, row.status)
            return self._view(conn, self._row(conn, batch_id)), cancelled

    # -- the driver ----------------------------------------------------------

    def active(self) -> list[tuple[str, str]]:
        """``(id, status)`` of every batch the driver has work for, oldest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(batches.c.id, batches.c.status)
                .where(batches.c.status.in_(ACTIVE))
                .order_by(batches.c.seq)
            ).all()
        return [(row.id, row.status) for row in rows]

    def validate(self, batch_id: str) -> list[str]:
        """Validate a ``validating`` batch's input; queue its jobs or fail it.

        One streaming pass over the stored file checks every line, keeping in
        memory only the ``custom_id`` set; each valid line's serialised
        request goes to a spool (a temporary file past :data:`SPOOL_BYTES`).
        Only then, if no line was refused, the spool is queued
        :data:`INSERT_CHUNK` lines per transaction, the jobs held back from
        claims (``not_before`` = :data:`HELD`); the last transaction moves
        the batch to ``in_progress`` and releases them all at once: all or
        nothing, as far as any node can see. Returns the model of every job
        queued (for the wake-ups), ``[]`` if none.
        """
        with self._db.read() as conn:
            row = self._row(conn, batch_id)
        if row is None or row.status != VALIDATING:
            return []
        owner = _owner(row.owner_key_id)
        stored = self._files.find(owner, row.input_file_id)
        if stored is None:
            self._fail(batch_id, [self._file_gone(row.input_file_id)], self._clock())
            return []
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        with spool:
            highest = 0

            def keep(custom_id: str, request: ChatCompletionRequest) -> None:
                nonlocal highest
                priority = request.priority or 0
                highest = max(highest, priority)
                spool.write(to_json([custom_id, request.model, priority]) + b"\n")
                spool.write(node_request_json(request).encode() + b"\n")

            try:
                checked = validate_lines(
                    split_lines(self._files.read_all(stored)),
                    row.endpoint,
                    self._line_parser,
                    keep,
                )
            except FileGoneError:  # deleted while read: all or nothing, so nothing
                self._fail(batch_id, [self._file_gone(row.input_file_id)], self._clock())
                return []
            if checked.errors:
                self._fail(batch_id, checked.errors, self._clock())
                return []
            if (ceiling := self._over_ceiling(owner, highest)) is not None:
                self._fail(batch_id, [ceiling], self._clock())
                return []
            spool.seek(0)
            # A restart (or another replica) may have queued the first chunks already:
            # ``total`` counts the lines queued so far, and each chunk moves it on
            # only from the value it expects, so no line is ever queued twice.
            queued = int(row.total)
            records = itertools.islice(_spooled(spool), queued, None)
            while chunk := list(itertools.islice(records, INSERT_CHUNK)):
                if not self._queue_held(owner, batch_id, queued, chunk):
                    return []
                queued += len(chunk)
        return self._release(batch_id, queued)

    def _over_ceiling(self, owner: Caller, highest: int) -> BatchLineError | None:
        """The batch's error when a line's priority is above the owner's ceiling."""
        if highest <= 0:
            return None
        try:
            with self._db.read() as conn:
                check_priority(conn, owner, highest)
        except PriorityAboveCeiling as exc:
            return BatchLineError(code="priority_above_ceiling", message=str(exc), param="priority")
        return None

    def _queue_held(
        self, owner: Caller, batch_id: str, queued: int, chunk: list[SpooledLine]
    ) -> bool:
        """Queue one chunk of lines, held; False if the batch moved on (cancelled, or
        another replica queued these lines first)."""
        with self._db.write() as conn:
            moved = conn.execute(
                batches.update()
                .where(
                    batches.c.id == batch_id,
                    batches.c.status == VALIDATING,
                    batches.c.total == queued,
                )
                .values(total=queued + len(chunk))
            )
            if moved.rowcount != 1:
                return False
            insert_batch_lines(
                conn,
                owner,
                chunk,
                now=self._clock(),
                max_attempts=self._policy.max_attempts,
                batch_id=batch_id,
                first_line=queued + 1,
                not_before=HELD,
                aging_seconds=self._policy.priority_aging_seconds,
            )
        return True

    def _release(self, batch_id: str, total: int) -> list[str]:
        """Move a fully queued batch to ``in_progress`` and let its jobs be claimed."""
        now = self._clock()
        with self._db.write() as conn:
            moved = conn.execute(
                batches.update()
                .where(
                    batches.c.id == batch_id,
                    batches.c.status == VALIDATING,
                    batches.c.total == total,
                )
                .values(status=IN_PROGRESS, in_progress_at=now)
            )
            if moved.rowcount != 1:
                return []  # cancelled meanwhile, or another replica got there first
            conn.execute(
                jobs.update()
                .where(
                    jobs.c.batch_id == batch_id,
                    jobs.c.status == JobStatus.QUEUED.value,
                    jobs.c.not_before == HELD,
                )
                .values(not_before=0.0, updated_at=now)
            )
            models = conn.execute(
                sa.select(jobs.c.model, sa.func.count())
                .where(jobs.c.batch_id == batch_id, jobs.c.status == JobStatus.QUEUED.value)
                .group_by(jobs.c.model)
            ).all()
            released = [model for model, count in models for _ in range(int(count))]
            notify.jobs_available(conn, released)  # other replicas' fetchers (db/notify.py)
        logger.info("batch %s: queued %d job(s)", batch_id, total)
        return released

    @staticmethod
    def _file_gone(file_id: str) -> BatchLineError:
        return BatchLineError(
            code="invalid_file",
            message=f"input file {file_id} no longer exists",
            param="input_file_id",
        )

    def advance(self) -> Advanced:
        """One step for every running batch: expire, finish cancelling, finalise."""
        cancelled_jobs: list[str] = []
        ended: list[str] = []
        for batch_id, status in self.active():
            if status == VALIDATING:
                continue
            now = self._clock()
            with self._db.write() as conn:
                row = self._row(conn, batch_id)
                if row is None or row.status != status:
                    continue
                target = None
                if status == IN_PROGRESS and now >= row.expires_at:
                    cancelled_jobs += self._cancel_jobs(conn, batch_id, _LIVE, now)
                    target = EXPIRED
                elif status == CANCELLING and now >= row.expires_at:
                    # The cancel the user asked for wins over the window; past it
                    # running lines are not waited for any more.
                    cancelled_jobs += self._cancel_jobs(conn, batch_id, _LIVE, now)
                    target = CANCELLED
                elif status == CANCELLING:
                    cancelled_jobs += self._cancel_jobs(
                        conn, batch_id, (JobStatus.QUEUED.value,), now
                    )
                    if not self._has_jobs(conn, batch_id, _LIVE):
                        target = CANCELLED
                elif status == IN_PROGRESS and not self._has_jobs(conn, batch_id, _LIVE):
                    target = COMPLETED
                elif status == FINALIZING:
                    target = self._finalizing_target(row, now)
                if target is None:
                    continue
                if status != FINALIZING and not self._move(
                    conn, batch_id, status, FINALIZING, finalizing_at=now
                ):
                    continue
            if self._finalize(batch_id, target):
                ended.append(batch_id)
        return Advanced(cancelled_jobs, ended)

    # -- inside --------------------------------------------------------------

    @staticmethod
    def _row(conn: sa.Connection, batch_id: str, lock: bool = False) -> Any:
        query = sa.select(batches).where(batches.c.id == db_text(batch_id))
        return conn.execute(query.with_for_update() if lock else query).first()

    @staticmethod
    def _move(conn: sa.Connection, batch_id: str, old: str, new: str, **values: Any) -> bool:
        moved = conn.execute(
            batches.update()
            .where(batches.c.id == batch_id, batches.c.status == old)
            .values(status=new, **values)
        )
        return moved.rowcount == 1

    def _fail(self, batch_id: str, errors: list[BatchLineError], now: float) -> None:
        text = json.dumps([error.model_dump(mode="json") for error in errors])
        with self._db.write() as conn:
            if self._move(conn, batch_id, VALIDATING, FAILED, errors=text, failed_at=now, total=0):
                self._drop_held(conn, batch_id)
        logger.info("batch %s failed validation (%d error(s))", batch_id, len(errors))

    @staticmethod
    def _drop_held(conn: sa.Connection, batch_id: str) -> None:
        """Delete the jobs queued so far of a batch that ends before it was released."""
        conn.execute(jobs.delete().where(jobs.c.batch_id == batch_id, jobs.c.not_before == HELD))

    @staticmethod
    def _has_jobs(conn: sa.Connection, batch_id: str, statuses: tuple[str, ...]) -> bool:
        found = conn.execute(
            sa.select(jobs.c.seq)
            .where(jobs.c.batch_id == batch_id, jobs.c.status.in_(statuses))
            .limit(1)
        ).first()
        return found is not None

    @staticmethod
    def _cancel_jobs(
        conn: sa.Connection, batch_id: str, statuses: tuple[str, ...], now: float
    ) -> list[str]:
        rows = conn.execute(
            sa.select(jobs.c.seq, jobs.c.id, jobs.c.lease_token).where(
                jobs.c.batch_id == batch_id, jobs.c.status.in_(statuses)
            )
        ).all()
        transitions.cancel_many(conn, [row.seq for row in rows], now)
        tokens = [row.lease_token for row in rows if row.lease_token is not None]
        if tokens:
            leases.end_leases(conn, tokens, leases.CANCELLED, now)
        ids = [row.id for row in rows]
        notify.jobs_finished(conn, ids)  # other replicas' polls (db/notify.py)
        return ids

    def _finalizing_target(self, row: Any, now: float) -> str:
        # A restart in the middle of finalising: decide again what it ends as.
        if row.cancelling_at is not None:
            return CANCELLED
        return EXPIRED if now >= row.expires_at else COMPLETED

    def _counts(self, conn: sa.Connection, batch_id: str) -> dict[str, int]:
        rows = conn.execute(
            sa.select(jobs.c.status, sa.func.count())
            .where(jobs.c.batch_id == batch_id)
            .group_by(jobs.c.status)
        ).all()
        return {row[0]: int(row[1]) for row in rows}

    def _finalize(self, batch_id: str, target: str) -> bool:
        """Write the output and error files, then end the batch as ``target``; False if
        another driver ended it first.

        Nothing claims the writing: two replicas (or a restart after a crash
        between storing and the move) may both write files. The conditional
        move decides: its winner deletes, in the same transaction, any other
        stored output of this batch (named ``{batch}_output.jsonl`` /
        ``_error.jsonl``, purpose ``batch_output``, which only this module
        writes), and a loser deletes its own. So a batch ends with exactly
        its one output and one error file, whatever overlapped.
        """
        with self._db.read() as conn:
            row = self._row(conn, batch_id)
        code = EXPIRED_CODE if target == EXPIRED else CANCELLED_CODE
        output: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        errors: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        with output, errors:
            succeeded = failed = 0
            for is_output, line in split_rows(self._finished_rows(batch_id), code):
                if is_output:
                    succeeded += 1
                    output.write(line)
                else:
                    failed += 1
                    errors.write(line)
            output_id = self._store(row, output, "output") if succeeded else None
            error_id = self._store(row, errors, "error") if failed else None
        now = self._clock()
        mine = [file_id for file_id in (output_id, error_id) if file_id is not None]
        with self._db.write() as conn:
            counts = self._counts(conn, batch_id)
            won = self._move(
                conn,
                batch_id,
                FINALIZING,
                target,
                output_file_id=output_id,
                error_file_id=error_id,
                completed=counts.get(JobStatus.COMPLETED.value, 0),
                failed=counts.get(JobStatus.FAILED.value, 0),
                **{f"{target}_at": now},
            )
            if won:
                FileStore.delete_named(
                    conn,
                    row.owner_key_id,
                    PURPOSE_BATCH_OUTPUT,
                    [_output_name(batch_id, kind) for kind in _OUTPUT_KINDS],
                    mine,
                )
        if not won:
            for file_id in mine:
                self._files.discard(file_id)
            logger.info(
                "batch %s was finalised by another driver; dropped this one's files", batch_id
            )
            return False
        logger.info(
            "batch %s %s: %d succeeded, %d in the error file", batch_id, target, succeeded, failed
        )
        return True

    def _store(self, row: Any, spooled: IO[bytes], kind: str) -> str:
        spooled.seek(0)
        stored = self._files.save(
            row.owner_key_id,
            _output_name(row.id, kind),
            PURPOSE_BATCH_OUTPUT,
            iter(lambda: spooled.read(1024 * 1024), b""),
        )
        return stored.id

    def _finished_rows(self, batch_id: str) -> Iterator[Any]:
        """The batch's jobs in input line order, a page at a time.

        A batch's jobs are inserted in line order, so their ``seq`` (the
        primary key) follows their line: the pages walk the primary key over
        the batch's ``seq`` range, each page O(its rows). Paging by
        ``batch_line`` through ``ix_jobs_batch`` instead re-read and sorted
        every remaining row of the batch on each page (O(n²), seconds for
        50,000 lines). The ``|| ''`` keeps the planner off that index.
        """
        with self._db.read() as conn:
            low, high = conn.execute(
                sa.select(sa.func.min(jobs.c.seq), sa.func.max(jobs.c.seq)).where(
                    jobs.c.batch_id == batch_id
                )
            ).one()
        if low is None:
            return
        last = int(low) - 1
        while True:
            with self._db.read() as conn:
                rows = conn.execute(
                    sa.select(
                        jobs.c.seq,
                        jobs.c.id,
                        jobs.c.status,
                        jobs.c.result,
                        jobs.c.error_message,
                        jobs.c.error_type,
                        jobs.c.custom_id,
                        jobs.c.batch_line,
                    )
                    .where(
                        jobs.c.seq > last,
                        jobs.c.seq <= high,
                        jobs.c.batch_id.concat("") == batch_id,
                    )
                    .order_by(jobs.c.seq)
                    .limit(OUTPUT_PAGE)
                ).all()
            yield from rows
            if len(rows) < OUTPUT_PAGE:
                return
            last = rows[-1].seq

    def _view(self, conn: sa.Connection, row: Any) -> Batch:
        if row.status in BATCH_FINAL_STATUSES or row.status == VALIDATING:
            counts = BatchRequestCounts(total=row.total, completed=row.completed, failed=row.failed)
        else:
            by_status = self._counts(conn, row.id)
            counts = BatchRequestCounts(
                total=row.total,
                completed=by_status.get(JobStatus.COMPLETED.value, 0),
                failed=by_status.get(JobStatus.FAILED.value, 0),
            )
        errors = None
        if row.errors:
            errors = BatchErrors(data=[BatchLineError(**item) for item in json.loads(row.errors)])
        return Batch(
            id=row.id,
            endpoint=row.endpoint,
            errors=errors,
            input_file_id=row.input_file_id,
            completion_window=row.completion_window,
            status=row.status,
            output_file_id=row.output_file_id,
            error_file_id=row.error_file_id,
            created_at=int(row.created_at),
            in_progress_at=_seconds(row.in_progress_at),
            expires_at=_seconds(row.expires_at),
            finalizing_at=_seconds(row.finalizing_at),
            completed_at=_seconds(row.completed_at),
            failed_at=_seconds(row.failed_at),
            expired_at=_seconds(row.expired_at),
            cancelling_at=_seconds(row.cancelling_at),
            cancelled_at=_seconds(row.cancelled_at),
            request_counts=counts,
            metadata=json.loads(row.metadata) if row.metadata else None,
        )
