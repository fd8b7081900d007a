"""The queue as the HTTP layer sees it: one method per operation, no HTTP inside.

Each method is one transaction: reads go through :meth:`Database.read` (no
lock), writes through :meth:`Database.write` (the one writer on SQLite). The
work itself lives in the sibling modules: :mod:`.submission`, :mod:`.claiming`,
:mod:`.outcomes`, :mod:`.leases`, :mod:`.views`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import sqlalchemy as sa
from openbeepboop_schemas import (
    TERMINAL_STATUSES,
    ChatCompletionRequest,
    FetchRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    Job,
    JobList,
    JobStatus,
    Lease,
    PollEntry,
    SubmitRequest,
    SubmitResponse,
)
from sqlalchemy.exc import IntegrityError

from openbeepboop_server import nodes as registry
from openbeepboop_server.db.database import IN_CHUNK, Database
from openbeepboop_server.db.tables import idempotency_keys, jobs, leases
from openbeepboop_server.db.safe_text import db_text, db_texts
from openbeepboop_server.keys import Caller
from openbeepboop_server.nodes import NodeInfo
from openbeepboop_server.queue import leases as lease_ops
from openbeepboop_server.queue.claiming import claim_jobs, next_claimable_at
from openbeepboop_server.queue.outcomes import deliver
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.submission import (
    find_idempotent,
    insert_jobs,
    remember_idempotent,
)
from openbeepboop_server.queue.views import (
    POLL_COLUMNS,
    not_found,
    poll_entry,
    visible_rows,
    visible_to,
)

logger = logging.getLogger(__name__)

#: A node's registry row is rewritten at most this often by one process
#: (``last_seen`` lags by at most this much; ``/v1/models`` looks minutes back).
NODE_RECORD_SECONDS = 1.0
#: Bound on the memory of recent registry writes.
MAX_REMEMBERED_NODES = 10_000
#: Largest page ``list_jobs`` returns, whatever is asked.
MAX_LIST_LIMIT = 1_000
#: Terminal jobs deleted per purge transaction.
PURGE_BATCH = 1_000
_TERMINAL = tuple(status.value for status in TERMINAL_STATUSES)
_DAY = 86_400.0
#: The watched jobs (``ids``) a delivery has just finished, with their owners
#: (built once, like the poll's select: see queue/views.py).
_FINISHED_BY_IDS = sa.select(jobs.c.owner_key_id, *POLL_COLUMNS).where(
    jobs.c.id.in_(sa.bindparam("ids", expanding=True)), jobs.c.status.in_(_TERMINAL)
)


class QueueService:
    """Jobs for users, leases for nodes, housekeeping for the server."""

    def __init__(
        self, db: Database, policy: QueuePolicy, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._policy = policy
        self._clock = clock
        # PostgreSQL replicas claim concurrently; SQLite has one writer anyway.
        self._row_locks = not db.is_sqlite
        # What this process last wrote to each node's registry row, and when.
        self._recorded: dict[str, tuple[float, tuple[object, ...]]] = {}

    @property
    def policy(self) -> QueuePolicy:
        """The policy this service applies."""
        return self._policy

    # -- users ---------------------------------------------------------------

    def submit(
        self, caller: Caller, request: ChatCompletionRequest, idempotency_key: str | None = None
    ) -> Job:
        """Queue one job (durable when this returns)."""
        return self.submit_many(caller, [request], idempotency_key)[0]

    def submit_many(
        self,
        caller: Caller,
        requests: list[ChatCompletionRequest],
        idempotency_key: str | None = None,
    ) -> list[Job]:
        """Queue many jobs in one transaction; with a known idempotency key, the first ones."""
        if not requests:
            return []
        try:
            return self._submit(caller, requests, idempotency_key)[0]
        except IntegrityError:
            if idempotency_key is None:
                raise
            # A concurrent twin with the same key won the race (PostgreSQL): answer with its jobs.
            with self._db.read() as conn:
                earlier = find_idempotent(conn, caller, idempotency_key)
            if earlier is None:
                raise
            return earlier

    def submit_and_claim(
        self,
        caller: Caller,
        request: ChatCompletionRequest,
        idempotency_key: str | None,
        node: Caller,
        fetch: FetchRequest,
    ) -> tuple[Job, list[Lease]]:
        """Queue one job and, in the same transaction, claim for a node waiting on ``fetch``.

        The claim is the node's own claim (same query, same limits, so an
        older claimable job still comes first), only without a transaction
        of its own. An idempotent replay creates nothing and claims nothing.
        """
        try:
            created, claimed = self._submit(caller, [request], idempotency_key, (node, fetch))
        except IntegrityError:
            return self.submit(caller, request, idempotency_key), []
        return created[0], claimed

    def _submit(
        self,
        caller: Caller,
        requests: list[ChatCompletionRequest],
        key: str | None,
        claimant: tuple[Caller, FetchRequest] | None = None,
    ) -> tuple[list[Job], list[Lease]]:
        now = self._clock()
        claimed: list[Lease] = []
        recorded = None
        with self._db.write() as conn:
            if key is not None:
                earlier = find_idempotent(conn, caller, key, forget_spent=True)
                if earlier is not None:
                    return earlier, []
            created = insert_jobs(
                conn, caller, requests, now=now, max_attempts=self._policy.max_attempts
            )
            if key is not None:
                remember_idempotent(conn, caller, key, created, now)
            if claimant is not None:
                claimed, recorded = self._claim_in(conn, *claimant, now)
        self._remember_recorded(recorded)
        return created, claimed

    def get(self, caller: Caller, job_id: str) -> PollEntry | None:
        """One job, or None if the caller may not see it."""
        with self._db.read() as conn:
            row = visible_rows(conn, caller, [db_text(job_id)]).first()
        return None if row is None else poll_entry(row)

    def poll(self, caller: Caller, ids: list[str]) -> list[PollEntry]:
        """One entry per id, in order; ``NOT_FOUND`` for ids the caller may not see."""
        wanted = db_texts(list(dict.fromkeys(ids)))
        found: dict[str, PollEntry] = {}
        with self._db.read() as conn:
            for start in range(0, len(wanted), IN_CHUNK):
                for row in visible_rows(conn, caller, wanted[start : start + IN_CHUNK]):
                    found[row.id] = poll_entry(row)
        return [found.get(db_text(job_id)) or not_found(job_id) for job_id in ids]

    def list_jobs(
        self,
        caller: Caller,
        *,
        status: JobStatus | None = None,
        limit: int = 20,
        after: str | None = None,
    ) -> JobList:
        """The caller's jobs (all jobs for ADMIN), newest first, ``limit`` per page.

        ``after`` is the ``next_after`` of the previous page. An ``after`` the
        caller cannot see ends the listing (an empty page), like a cursor past the end.
        """
        limit = max(1, min(limit, MAX_LIST_LIMIT))
        query = sa.select(*POLL_COLUMNS).where(visible_to(caller))
        if status is not None:
            query = query.where(jobs.c.status == JobStatus(status).value)
        with self._db.read() as conn:
            if after is not None:
                cursor = conn.execute(
                    sa.select(jobs.c.seq).where(jobs.c.id == db_text(after), visible_to(caller))
                ).scalar()
                if cursor is None:
                    return JobList(data=[], has_more=False, next_after=None)
                query = query.where(jobs.c.seq < cursor)
            rows = conn.execute(query.order_by(jobs.c.seq.desc()).limit(limit + 1)).all()
        page = [poll_entry(row) for row in rows[:limit]]
        has_more = len(rows) > limit
        return JobList(data=page, has_more=has_more, next_after=page[-1].id if has_more else None)

    def cancel(self, caller: Caller, job_id: str) -> PollEntry | None:
        """Cancel a QUEUED or PROCESSING job; a terminal job is returned unchanged."""
        now = self._clock()
        with self._db.write() as conn:
            query = sa.select(jobs.c.seq, jobs.c.status, jobs.c.lease_token).where(
                jobs.c.id == db_text(job_id), visible_to(caller)
            )
            if self._row_locks:
                query = query.with_for_update()
            row = conn.execute(query).first()
            if row is None:
                return None
            if row.status not in _TERMINAL:
                conn.execute(
                    jobs.update()
                    .where(jobs.c.seq == row.seq)
                    .values(
                        status=JobStatus.CANCELLED.value,
                        completed_at=now,
                        updated_at=now,
                        lease_token=None,
                        lease_expires_at=None,
                    )
                )
                if row.lease_token is not None:
                    lease_ops.end_leases(conn, [row.lease_token], lease_ops.CANCELLED, now)
            entry = conn.execute(sa.select(*POLL_COLUMNS).where(jobs.c.seq == row.seq)).one()
        return poll_entry(entry)

    # -- nodes ---------------------------------------------------------------

    def claim(self, caller: Caller, fetch: FetchRequest) -> list[Lease]:
        """Lease up to ``fetch.max_jobs`` jobs for the declared models; records the node."""
        now = self._clock()
        with self._db.write() as conn:
            claimed, recorded = self._claim_in(conn, caller, fetch, now)
        self._remember_recorded(recorded)
        return claimed

    def _claim_in(
        self, conn: sa.Connection, caller: Caller, fetch: FetchRequest, now: float
    ) -> tuple[list[Lease], tuple[str, float, tuple[object, ...]] | None]:
        """The claim inside an open write transaction; also what to remember once committed."""
        claimed = claim_jobs(conn, caller, fetch, now=now, lease_seconds=self._policy.lease_seconds)
        recorded = self._record_node(
            conn, fetch.node_id, caller.key_name, now, fetch.models, fetch.version
        )
        return claimed, recorded

    def deliver(self, caller: Caller, submit: SubmitRequest) -> SubmitResponse:
        """Record results, errors and releases; one ack per outcome, in order."""
        return self.deliver_and_read(caller, submit, [])[0]

    def deliver_and_read(
        self, caller: Caller, submit: SubmitRequest, watched: list[str]
    ) -> tuple[SubmitResponse, list[tuple[int, PollEntry]]]:
        """:meth:`deliver`, then, in the same transaction, the poll entries of ``watched``
        jobs that are now terminal, each with the key that owns it.

        For polls waiting on those jobs: they get their answer without a read of their own.
        """
        now = self._clock()
        finished: list[tuple[int, PollEntry]] = []
        with self._db.write() as conn:
            response = deliver(
                conn, caller, submit, now=now, policy=self._policy, lock=self._row_locks
            )
            for start in range(0, len(watched), IN_CHUNK):
                rows = conn.execute(
                    _FINISHED_BY_IDS, {"ids": db_texts(watched[start : start + IN_CHUNK])}
                )
                finished.extend((row.owner_key_id, poll_entry(row)) for row in rows)
        return response, finished

    def heartbeat(self, caller: Caller, beat: HeartbeatRequest) -> HeartbeatResponse:
        """Extend held leases; also refreshes the node's registry entry."""
        now = self._clock()
        with self._db.write() as conn:
            response = lease_ops.heartbeat(
                conn,
                caller,
                beat,
                now=now,
                lease_seconds=self._policy.lease_seconds,
                lock=self._row_locks,
            )
            recorded = self._record_node(
                conn, beat.node_id, caller.key_name, now, beat.models, beat.version
            )
        self._remember_recorded(recorded)
        return response

    def _record_node(
        self,
        conn: sa.Connection,
        node_id: str,
        key_name: str,
        now: float,
        models: list[str] | None,
        version: str | None,
    ) -> tuple[str, float, tuple[object, ...]] | None:
        """Refresh the node's registry row, unless this process did so with the same facts
        less than :data:`NODE_RECORD_SECONDS` ago.

        A busy node fetches many times a second; rewriting its ``last_seen``
        each time was a quarter of a small claim's cost, for a value read
        with a resolution of seconds. Returns what to remember once the
        transaction has committed (None when skipped).
        """
        facts = (key_name, None if models is None else tuple(models), version)
        last = self._recorded.get(node_id)
        if last is not None and last[1] == facts and 0 <= now - last[0] < NODE_RECORD_SECONDS:
            return None
        registry.record_node(
            conn, node_id=node_id, key_name=key_name, now=now, models=models, version=version
        )
        return node_id, now, facts

    def _remember_recorded(self, recorded: tuple[str, float, tuple[object, ...]] | None) -> None:
        if recorded is not None:
            node_id, now, facts = recorded
            if len(self._recorded) >= MAX_REMEMBERED_NODES:
                self._recorded.clear()  # many short-lived node ids: start over, stay bounded
            self._recorded[node_id] = (now, facts)

    # -- housekeeping --------------------------------------------------------

    def expire_leases(self) -> list[str]:
        """Requeue (or fail) every job whose lease has expired; their ids."""
        expired: list[str] = []
        while True:
            with self._db.write() as conn:
                batch = lease_ops.expire_batch(conn, now=self._clock(), skip_locked=self._row_locks)
            expired.extend(batch)
            if len(batch) < lease_ops.EXPIRY_BATCH:
                break
        if expired:
            logger.info("took back %d expired lease(s)", len(expired))
        return expired

    def grant_restart_grace(self) -> int:
        """At start-up: every PROCESSING lease gets at least a full lease period from now."""
        with self._db.write() as conn:
            moved = lease_ops.grant_restart_grace(
                conn, now=self._clock(), lease_seconds=self._policy.lease_seconds
            )
        if moved:
            logger.info("extended %d lease(s) for the time the server was down", moved)
        return moved

    def purge_finished(self) -> int:
        """Delete terminal jobs finished more than ``retention_days`` ago; how many."""
        cutoff = self._clock() - self._policy.retention_days * _DAY
        purged = 0
        while True:
            with self._db.write() as conn:
                seqs = list(
                    conn.execute(
                        sa.select(jobs.c.seq)
                        .where(jobs.c.status.in_(_TERMINAL), jobs.c.completed_at < cutoff)
                        .order_by(jobs.c.seq)
                        .limit(PURGE_BATCH)
                    ).scalars()
                )
                if seqs:
                    conn.execute(leases.delete().where(leases.c.job_seq.in_(seqs)))
                    conn.execute(jobs.delete().where(jobs.c.seq.in_(seqs)))
                else:
                    conn.execute(
                        idempotency_keys.delete().where(idempotency_keys.c.created_at < cutoff)
                    )
            purged += len(seqs)
            if len(seqs) < PURGE_BATCH:
                if seqs:
                    continue  # one more round deletes the spent idempotency keys
                break
        if purged:
            logger.info("purged %d finished job(s) past retention", purged)
        return purged

    def next_claimable_at(self, models: list[str]) -> float | None:
        """When the earliest backed-off QUEUED job of these models becomes claimable."""
        with self._db.read() as conn:
            return next_claimable_at(conn, models, now=self._clock())

    def queue_depth(
        self, statuses: Iterable[JobStatus] | None = None
    ) -> list[tuple[str, str, int]]:
        """Job counts by (status, model), optionally only for some statuses.

        Reads the (status, model, seq) index; cost grows with the rows counted,
        so a metrics scrape may prefer the live statuses only.
        """
        query = sa.select(jobs.c.status, jobs.c.model, sa.func.count())
        if statuses is not None:
            query = query.where(jobs.c.status.in_([JobStatus(s).value for s in statuses]))
        with self._db.read() as conn:
            rows = conn.execute(
                query.group_by(jobs.c.status, jobs.c.model).order_by(jobs.c.status, jobs.c.model)
            ).all()
        return [(row[0], row[1], int(row[2])) for row in rows]

    def served_models(self) -> list[str]:
        """Models that nodes seen within ``node_seen_seconds`` serve (``*`` excluded)."""
        since = self._clock() - self._policy.node_seen_seconds
        with self._db.read() as conn:
            return registry.served_models(conn, since=since)

    def list_nodes(self) -> list[NodeInfo]:
        """Every node ever seen, most recent first."""
        with self._db.read() as conn:
            return registry.list_nodes(conn)
