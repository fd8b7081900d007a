"""The queue as the HTTP layer sees it: one method per operation, no HTTP inside.

Each method is one transaction: reads go through :meth:`Database.read` (no
lock), writes through :meth:`Database.write` (the one writer on SQLite). The
work itself lives in the sibling modules: :mod:`.submission`, :mod:`.claiming`,
:mod:`.outcomes`, :mod:`.leases`, :mod:`.cancel`, :mod:`.retention`,
:mod:`.views`, :mod:`.pool_status` and :mod:`.lease_watch`; every change of a job's status goes
through :mod:`.transitions`.
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
    JobWarning,
    KeyUsageTotals,
    Lease,
    LeaseRef,
    PollEntry,
    PoolStatus,
    SubmitRequest,
    SubmitResponse,
    UsageReport,
)
from sqlalchemy.exc import IntegrityError

from openbeepboop_server import nodes as registry
from openbeepboop_server.db import notify
from openbeepboop_server.db.database import Database
from openbeepboop_server.keys import Caller
from openbeepboop_server.nodes import (
    NodeAdmission,
    NodeInfo,
    NodeRecorder,
    Recorded,
    ServedModels,
    ServedSnapshot,
)
from openbeepboop_server.queue import leases as lease_ops
from openbeepboop_server.queue import transitions, views
from openbeepboop_server.queue.cancel import cancel_job
from openbeepboop_server.queue.claiming import (
    Claimed,
    claim_jobs,
    claimable_models,
    next_claimable_at,
    read_claimed,
)
from openbeepboop_server.queue.lease_arrivals import LeaseArrivals
from openbeepboop_server.queue.lease_watch import WatchedLeases, watched_leases
from openbeepboop_server.queue.outcomes import deliver
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.pool_status import DEFAULT_WINDOW_SECONDS, build_pool_status
from openbeepboop_server.queue.quotas import admit
from openbeepboop_server.queue.retention import PURGE_BATCH, purge_batch, retention_cutoff
from openbeepboop_server.queue.statuses import QUEUED, TERMINAL
from openbeepboop_server.queue.submission import (
    find_idempotent,
    forget_idempotent,
    insert_jobs,
    remember_idempotent,
)
from openbeepboop_server.queue.usage import KeyUsageRow, hour_of, read_usage, totals_by_key
from openbeepboop_server.scopes import check_scope

logger = logging.getLogger(__name__)


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
        self._served = ServedSnapshot(policy.node_seen_seconds)
        # Heartbeats and results waiting for the writer: the reaper spares their leases.
        self._arrivals = LeaseArrivals()
        self._nodes = NodeRecorder(self._served, policy.node_seen_seconds)
        self._admission = NodeAdmission(
            policy.max_nodes_per_key, policy.node_seen_seconds, policy.max_models_per_key
        )

    @property
    def policy(self) -> QueuePolicy:
        """The policy this service applies."""
        return self._policy

    # -- users ---------------------------------------------------------------

    def submit(
        self,
        caller: Caller,
        request: ChatCompletionRequest,
        idempotency_key: str | None = None,
        *,
        request_hash: str | None = None,
    ) -> Job:
        """Queue one job (durable when this returns).

        ``request_hash`` (the body's SHA-256, with an idempotency key): a key
        first used for another request is refused (IdempotencyKeyReused).
        """
        return self.submit_many(caller, [request], idempotency_key, request_hash=request_hash)[0]

    def submit_many(
        self,
        caller: Caller,
        requests: list[ChatCompletionRequest],
        idempotency_key: str | None = None,
        *,
        request_hash: str | None = None,
    ) -> list[Job]:
        """Queue many jobs in one transaction; with a known idempotency key, the first ones."""
        if not requests:
            return []
        try:
            return self._submit(caller, requests, idempotency_key, request_hash=request_hash)[0]
        except IntegrityError:
            if idempotency_key is None:
                raise
            # A concurrent twin with the same key won the race (PostgreSQL): answer with its jobs.
            with self._db.read() as conn:
                earlier = find_idempotent(conn, caller, idempotency_key, request_hash=request_hash)
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
        *,
        request_hash: str | None = None,
    ) -> tuple[Job, list[Lease]]:
        """Queue one job and, in the same transaction, claim for a node waiting on ``fetch``.

        The claim is the node's own claim (same query, same limits, so an
        older claimable job still comes first), only without a transaction
        of its own. An idempotent replay creates nothing and claims nothing.
        """
        try:
            created, claimed = self._submit(
                caller, [request], idempotency_key, (node, fetch), request_hash=request_hash
            )
        except IntegrityError:
            return self.submit(caller, request, idempotency_key, request_hash=request_hash), []
        return created[0], claimed

    def _submit(
        self,
        caller: Caller,
        requests: list[ChatCompletionRequest],
        key: str | None,
        claimant: tuple[Caller, FetchRequest] | None = None,
        *,
        request_hash: str | None = None,
    ) -> tuple[list[Job], list[Lease]]:
        now = self._clock()
        claimed: list[Claimed] = []
        recorded = None
        with self._db.write() as conn:
            if key is not None:
                earlier = find_idempotent(
                    conn, caller, key, request_hash=request_hash, forget_spent=True
                )
                if earlier is not None:
                    return earlier, []
            admit(conn, caller, len(requests), now=now, lock=self._row_locks)
            created = insert_jobs(
                conn,
                caller,
                requests,
                now=now,
                max_attempts=self._policy.max_attempts,
                aging_seconds=self._policy.priority_aging_seconds,
            )
            if key is not None:
                remember_idempotent(conn, caller, key, created, now, request_hash)
            if claimant is not None:
                claimed, recorded = self._claim_in(conn, *claimant, now)
                notify.jobs_taken(conn, [job.model for job in claimed])
        self._nodes.remember(recorded)
        return created, self._read_claimed(claimed, now)

    def get(self, caller: Caller, job_id: str) -> PollEntry | None:
        """One job, or None if the caller may not see it."""
        with self._db.read() as conn:
            return views.entry(conn, caller, job_id)

    def poll(self, caller: Caller, ids: list[str]) -> list[PollEntry]:
        """One entry per id, in order; ``NOT_FOUND`` for ids the caller may not see."""
        with self._db.read() as conn:
            return views.poll_entries(conn, caller, ids)

    def list_jobs(
        self,
        caller: Caller,
        *,
        status: JobStatus | None = None,
        limit: int = 20,
        after: str | None = None,
        batch_id: str | None = None,
    ) -> JobList:
        """The caller's jobs (all jobs for ADMIN), newest first, ``limit`` per page.

        ``after`` is the ``next_after`` of the previous page, even one purged
        since; views.CursorError if it is not a job id.
        """
        with self._db.read() as conn:
            return views.list_page(
                conn, caller, status=status, limit=limit, after=after, batch_id=batch_id
            )

    def cancel(
        self,
        caller: Caller,
        job_id: str,
        *,
        only_queued: bool = False,
        forget_key: str | None = None,
    ) -> PollEntry | None:
        """Cancel a QUEUED or PROCESSING job (only a QUEUED one with ``only_queued``).

        A job it does not cancel is returned unchanged. ``forget_key``: the
        idempotency key that made the job, dropped in the same transaction if
        the job is cancelled, so that a retry with it queues the request anew
        (a synchronous chat whose caller hung up before a node took the job).
        """
        now = self._clock()
        with self._db.write() as conn:
            entry = cancel_job(
                conn, caller, job_id, now=now, lock=self._row_locks, only_queued=only_queued
            )
            if entry is not None and entry.status == JobStatus.CANCELLED:
                notify.jobs_finished(conn, [entry.id])
                if forget_key is not None:
                    forget_idempotent(conn, caller, forget_key)
            return entry

    # -- nodes ---------------------------------------------------------------

    def claim(self, caller: Caller, fetch: FetchRequest) -> list[Lease]:
        """Lease up to ``fetch.max_jobs`` jobs for the declared models; records the node."""
        now = self._clock()
        # Out of scope is refused before the admission counts the names it declares.
        check_scope(caller, fetch.node_id, [*fetch.models, *fetch.declared_models])
        self._admission.admit(caller.key_id, fetch.node_id, now, fetch.declared_models)
        with self._db.write() as conn:
            claimed, recorded = self._claim_in(conn, caller, fetch, now)
        self._nodes.remember(recorded)
        return self._read_claimed(claimed, now)

    def _read_claimed(self, claimed: list[Claimed], now: float) -> list[Lease]:
        """Parse claimed requests after the commit; fail unreadable ones in a write of their own."""
        if not claimed:
            return []
        leases, unreadable = read_claimed(claimed, now=now)
        if unreadable:
            with self._db.write() as conn:
                transitions.fail_unreadable(conn, unreadable)
                ids = {claim.seq: claim.job_id for claim in claimed}
                notify.jobs_finished(conn, [ids[row["b_seq"]] for row in unreadable])
        return leases

    def _claim_in(
        self, conn: sa.Connection, caller: Caller, fetch: FetchRequest, now: float
    ) -> tuple[list[Claimed], Recorded | None]:
        """The claim inside an open write transaction; also what to remember once committed."""
        check_scope(caller, fetch.node_id, [*fetch.models, *fetch.declared_models])
        recorded = self._nodes.record(conn, fetch, caller, now)
        claimed = claim_jobs(
            conn,
            caller,
            fetch,
            now=now,
            lease_seconds=self._policy.lease_seconds,
            aging_seconds=self._policy.priority_aging_seconds,
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
        check_scope(caller, submit.node_id, None)
        now = self._clock()
        tokens = (outcome.lease_token for outcome in submit.outcomes)
        with self._arrivals.arriving(tokens), self._db.write() as conn:
            response = deliver(
                conn, caller, submit, now=now, policy=self._policy, lock=self._row_locks
            )
            finished = views.finished_entries(conn, watched)
            _announce_acks(conn, response)
        return response, finished

    def heartbeat(self, caller: Caller, beat: HeartbeatRequest) -> HeartbeatResponse:
        """Extend held leases; also refreshes the node's registry entry."""
        check_scope(caller, beat.node_id, beat.declared_models)
        now = self._clock()
        self._admission.admit(caller.key_id, beat.node_id, now, beat.declared_models)
        tokens = (ref.lease_token for ref in beat.leases)
        with self._arrivals.arriving(tokens), self._db.write() as conn:
            # A full lease from when it is written, not from arrival: a beat that
            # waited out a busy writer must not leave a lease already run out.
            response = lease_ops.heartbeat(
                conn,
                caller,
                beat,
                now=self._clock(),
                lease_seconds=self._policy.lease_seconds,
                lock=self._row_locks,
            )
            recorded = self._nodes.record(conn, beat, caller, now)
        self._nodes.remember(recorded)
        return response

    def watched_leases(self, caller: Caller, refs: list[LeaseRef]) -> WatchedLeases:
        """Which of ``refs`` were cancelled or lost, and which are still held (a read only)."""
        with self._db.read() as conn:
            return watched_leases(conn, caller, refs)

    # -- housekeeping --------------------------------------------------------

    def expire_leases(self) -> list[str]:
        """Requeue (or fail) every job whose lease has expired; their ids."""
        expired: list[str] = []
        while True:
            with self._db.write() as conn:
                batch = transitions.expire_batch(
                    conn,
                    now=self._clock(),
                    skip_locked=self._row_locks,
                    max_queued_days=self._policy.max_queued_days,
                    spare=self._arrivals.marked(),
                )
                if batch.job_ids:
                    # Requeued or failed: other replicas' fetchers and polls look again.
                    notify.jobs_requeued(conn)
                    notify.jobs_finished(conn, batch.job_ids)
            expired.extend(batch.job_ids)
            if not batch.more:
                break
        if expired:
            logger.info("took back %d expired lease(s)", len(expired))
        return expired

    def expire_unfinished(self) -> list[str]:
        """Fail every QUEUED job older than ``max_queued_days`` (``expired``); their ids.

        Nothing to do (and no write taken) unless ``max_queued_days`` is set
        and the oldest queued job is past it: a read of one index entry.
        """
        max_days = self._policy.max_queued_days
        if max_days is None:
            return []
        with self._db.read() as conn:
            oldest = views.oldest_queued_at(conn)
        if oldest is None or oldest >= self._clock() - max_days * transitions.DAY_SECONDS:
            return []
        expired: list[str] = []
        while True:
            with self._db.write() as conn:
                batch = transitions.expire_unfinished(
                    conn, now=self._clock(), max_queued_days=max_days, skip_locked=self._row_locks
                )
                notify.jobs_finished(conn, batch)
            expired.extend(batch)
            if len(batch) < transitions.EXPIRY_BATCH:
                break
        if expired:
            logger.info("%d job(s) expired unfinished after %g day(s)", len(expired), max_days)
        return expired

    def grant_restart_grace(self) -> int:
        """At start-up: every PROCESSING lease gets at least a full lease period from now.

        Not on PostgreSQL while another replica is running: nodes could
        heartbeat through it, so a replica restarting (or crash-looping)
        beside live ones must not keep moving a dead node's leases forward.
        """
        with self._db.write() as conn:
            if self._row_locks and lease_ops.other_replicas_alive(conn):
                logger.info("another replica is running: no lease grace for this start")
                return 0
            moved = lease_ops.grant_restart_grace(
                conn, now=self._clock(), lease_seconds=self._policy.lease_seconds
            )
        if moved:
            logger.info("extended %d lease(s) for the time the server was down", moved)
        return moved

    def grant_outage_grace(self) -> int:
        """After the database was unreachable: every PROCESSING lease gets a full period again.

        Nodes could not heartbeat (or deliver) through any replica while the
        database was gone, so that time must not expire their leases. Run by
        each replica's housekeeping loop on its first tick that reaches the
        database again, before it expires anything.
        """
        with self._db.write() as conn:
            moved = lease_ops.grant_restart_grace(
                conn, now=self._clock(), lease_seconds=self._policy.lease_seconds
            )
        if moved:
            logger.info("extended %d lease(s) for the time the database was unreachable", moved)
        return moved

    def purge_finished(self) -> int:
        """Delete terminal jobs finished more than ``retention_days`` ago; how many."""
        cutoff = retention_cutoff(self._policy, self._clock())
        purged = 0
        while True:
            with self._db.write() as conn:
                batch = purge_batch(conn, cutoff, skip_locked=self._row_locks)
            purged += batch
            if batch < PURGE_BATCH:
                if batch:
                    continue  # one more round deletes the spent idempotency keys
                break
        if purged:
            logger.info("purged %d finished job(s) past retention", purged)
        return purged

    def purge_nodes(self) -> int:
        """Forget nodes not seen for ``node_retention_days``, and per key those not live
        beyond ``max_nodes_per_key``; how many."""
        now = self._clock()
        seen_before = now - self._policy.node_retention_days * transitions.DAY_SECONDS
        with self._db.write() as conn:
            purged = registry.purge_nodes(conn, seen_before=seen_before)
            purged += registry.purge_excess_nodes(
                conn,
                seen_before=now - self._policy.node_seen_seconds,
                keep=self._policy.max_nodes_per_key,
            )
        if purged:
            days = self._policy.node_retention_days
            logger.info("forgot %d node(s) not seen for %g day(s)", purged, days)
        return purged

    def reclaim_space(self) -> None:
        """Give the pages freed by purges back to the file system (SQLite, incremental)."""
        self._db.incremental_vacuum()

    # -- the long-polls' periodic re-check ------------------------------------

    def finished_among(self, ids: list[str]) -> list[str]:
        """Those of ``ids`` that are terminal (whoever finished them)."""
        with self._db.read() as conn:
            return views.finished_ids(conn, ids)

    def claimable_models(self, demand: dict[str, int]) -> list[str]:
        """One model per claimable job, at most ``demand[model]`` per model (``*``: any)."""
        with self._db.read() as conn:
            return claimable_models(conn, demand, now=self._clock())

    def touch_nodes(self, node_ids: list[str]) -> None:
        """Mark these nodes as seen now: they are waiting in a fetch long-poll."""
        with self._db.write() as conn:
            registry.touch_nodes(conn, node_ids, now=self._clock())

    def next_claimable_at(self, models: list[str]) -> float | None:
        """When the earliest backed-off QUEUED job of these models becomes claimable."""
        with self._db.read() as conn:
            return next_claimable_at(conn, models, now=self._clock())

    def queue_depth(
        self, statuses: Iterable[JobStatus] | None = None
    ) -> list[tuple[str, str, int]]:
        """Job counts by (status, model), optionally only for some statuses (see views.depth)."""
        with self._db.read() as conn:
            return views.depth(conn, statuses)

    def finished_counts(self) -> list[tuple[str, int]]:
        """Finished jobs by status, all models together (``/metrics``)."""
        with self._db.read() as conn:
            return views.count_by_status(conn, TERMINAL_STATUSES)

    def served_now(self) -> ServedModels:
        """What nodes serve, from the in-memory snapshot (no read; about a second old)."""
        return self._served.served

    def served_models(self) -> list[str]:
        """Models that nodes seen within ``node_seen_seconds`` serve (``*`` excluded)."""
        return self.served_by().models()

    def served_listing(self) -> ServedModels:
        """What ``/v1/models`` lists: the snapshot, re-read first only if this process's
        nodes declared something new since it was read.

        Reading the registry parses every node's declared models; with a
        thousand nodes of 256 long names each that took seconds, and every
        ``/v1/models`` call did it. The snapshot is re-read about once a second
        anyway (by the housekeeper, which slows down when reads get long).
        """
        if self._served.listing_stale:
            return self.refresh_served()
        return self._served.served

    def served_by(self) -> ServedModels:
        """What the nodes seen within ``node_seen_seconds`` serve, read now."""
        since = self._clock() - self._policy.node_seen_seconds
        with self._db.read() as conn:
            return registry.served_by(conn, since=since)

    def refresh_served(self) -> ServedModels:
        """Re-read :meth:`served_by` into the snapshot :meth:`submit_warnings` answers from."""
        served = self.served_by()
        self._served.replace(served)
        return served

    def submit_warnings(self, models: Iterable[str]) -> list[JobWarning]:
        """A warning per distinct model of a submit that no node seen recently serves.

        Answered from memory (see :class:`~openbeepboop_server.nodes.ServedSnapshot`):
        a submit never waits for the registry, at the price of about a second of lag.
        """
        return self._served.warnings(models)

    def pool_status(self, window_seconds: float = DEFAULT_WINDOW_SECONDS) -> PoolStatus:
        """The pool at a glance (``GET /v1/status``, ``status``): see :mod:`.pool_status`."""
        with self._db.read() as conn:
            return build_pool_status(
                conn,
                now=self._clock(),
                node_seen_seconds=self._policy.node_seen_seconds,
                window_seconds=window_seconds,
            )

    def usage(
        self, key_name: str | None, since: float | None = None, until: float | None = None
    ) -> UsageReport:
        """Usage per key over the hours overlapping ``[since, until)`` (see :mod:`.usage`)."""
        with self._db.read() as conn:
            rows = read_usage(conn, key_name=key_name, since=since, until=until)
        return UsageReport(
            since=None if since is None else hour_of(since),
            until=until,
            data=[
                KeyUsageTotals(
                    key=row.key_name,
                    completed=row.totals.completed,
                    failed=row.totals.failed,
                    cancelled=row.totals.cancelled,
                    prompt_tokens=row.totals.prompt_tokens,
                    completion_tokens=row.totals.completion_tokens,
                    total_tokens=row.totals.prompt_tokens + row.totals.completion_tokens,
                    llm_seconds=round(row.totals.llm_seconds, 3),
                )
                for row in rows
            ],
        )

    def usage_totals(self) -> list[KeyUsageRow]:
        """All-time usage of every key that used anything (the Prometheus counters)."""
        with self._db.read() as conn:
            return totals_by_key(conn)

    def nodes_seen(self) -> int:
        """How many nodes were seen within ``node_seen_seconds`` (``/metrics``)."""
        since = self._clock() - self._policy.node_seen_seconds
        with self._db.read() as conn:
            return registry.count_nodes_seen(conn, since=since)

    def list_nodes(self) -> list[NodeInfo]:
        """Every node ever seen, most recent first."""
        with self._db.read() as conn:
            return registry.list_nodes(conn)


def _announce_acks(conn: sa.Connection, response: SubmitResponse) -> None:
    """Tell the other replicas what a delivery changed (sent when it commits: db/notify.py).

    Jobs that reached a terminal status wake the polls watching them; jobs
    requeued (a retry, a release) wake the fetchers.
    """
    accepted = [ack for ack in response.acks if ack.ack == "accepted"]
    notify.jobs_finished(conn, [ack.job_id for ack in accepted if ack.status in TERMINAL])
    if any(ack.status == QUEUED for ack in accepted):
        notify.jobs_requeued(conn)
