"""Background upkeep while the server runs: expire leases and old jobs, purge, re-read nodes.

Lease expiry runs every ``[queue] reap_interval_seconds`` (1 s by default), so
a dead node's jobs go back to the queue within about a second of their lease
running out; each expiry wakes the long-polls that may care. On the same tick,
with ``[queue] max_queued_days`` set, QUEUED jobs older than that end FAILED
(``expired``; one index read when there are none). Purging finished jobs past
retention, nodes not seen for ``node_retention_days`` and uploads a crash left
``uploading`` for ``[openai] stale_upload_seconds`` runs once soon after
start-up and then every ``purge_interval_seconds`` (an hour), followed on
SQLite by an incremental vacuum that gives the freed pages back to the file
system. The long-polls' one periodic re-check
(:class:`~openbeepboop_server.dispatch.recheck.Rechecker`) runs here as a
loop of its own, and on PostgreSQL the thread that listens for other
replicas' changes (:class:`~openbeepboop_server.dispatch.replicas.ReplicaListener`).
Apart from those, every
:data:`SERVED_REFRESH_SECONDS` (or, when a re-read is slow, twenty times its
duration) the registry is re-read into the snapshot that
submits check their model against (:class:`~openbeepboop_server.nodes.ServedSnapshot`),
on its own schedule so that a long reap interval cannot make it stale. All
run the synchronous service calls in the thread pool; a failure is logged and
retried on the next tick, never fatal. With several replicas each runs its own
loops: the service calls are safe to run concurrently.

A tick that fails because the database is unreachable (:func:`database_unreachable`)
means nodes could not heartbeat either, through any replica: the first tick
that reaches the database again gives every in-flight lease a full period
(:meth:`~openbeepboop_server.queue.service.QueueService.grant_outage_grace`,
the restart grace) before it expires anything, so an outage longer than a
lease does not throw away the work of live nodes. Each replica's loop does
this for itself. A busy SQLite writer or a PostgreSQL lock or statement
timeout is not an outage (heartbeats got through, or are spared by
``queue/lease_arrivals.py``): a tick failing that way grants nothing, so
failures that come and go cannot keep a dead node's leases alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time

import sqlalchemy as sa
from anyio.to_thread import run_sync

from openbeepboop_server.context import ServerContext
from openbeepboop_server.db.faults import RoundFailures
from openbeepboop_server.dispatch.recheck import Rechecker
from openbeepboop_server.dispatch.replicas import ReplicaListener
from openbeepboop_server.queue.files import FileStore

logger = logging.getLogger(__name__)

#: The first purge waits this long after start-up, out of the way of the first requests.
FIRST_PURGE_DELAY_SECONDS = 5.0
#: How often the served-models snapshot is re-read: how far a submit's warning may lag.
SERVED_REFRESH_SECONDS = 1.0
#: A re-read waits at least this many times its own duration before the next, so it
#: takes at most 5 % of a core: a registry of many nodes declaring hundreds of
#: names each (one key's invented ones) made it a tenth of a second, every second.
SERVED_REFRESH_SHARE = 20.0


#: SQLSTATE classes of PostgreSQL errors that mean the server is not there to talk to:
#: connection exceptions, and "operator intervention" (shutdown, crash recovery, starting).
_UNREACHABLE_SQLSTATES = ("08", "57P")
#: SQLite result codes that mean the file itself cannot be used (not a busy writer).
_UNREACHABLE_SQLITE = ("SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_NOTADB", "SQLITE_FULL")


def database_unreachable(exc: BaseException) -> bool:
    """True if ``exc`` says the database could not be reached at all.

    That is: the connection was refused, dropped or could not be made (no
    SQLSTATE: the driver's own error), PostgreSQL is shutting down or
    starting, or SQLite's file cannot be opened or read. Lock and statement
    timeouts, a busy SQLite writer and SQL errors are not: nodes may have
    been heard meanwhile.
    """
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    cause = exc.orig
    if isinstance(cause, sqlite3.Error):
        name = getattr(cause, "sqlite_errorname", "") or ""
        return name.startswith(_UNREACHABLE_SQLITE)
    if not isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        return False
    sqlstate = getattr(cause, "sqlstate", None)
    return sqlstate is None or str(sqlstate).startswith(_UNREACHABLE_SQLSTATES)


def next_served_refresh(duration: float) -> float:
    """Seconds until the next re-read of the served models, after one that took ``duration``."""
    return max(SERVED_REFRESH_SECONDS, duration * SERVED_REFRESH_SHARE)


class Housekeeper:
    """Runs the background loops of one app; :meth:`start` at start-up, :meth:`stop` at shutdown."""

    def __init__(self, context: ServerContext) -> None:
        self._context = context
        self._tasks: list[asyncio.Task[None]] = []
        self.rechecker = Rechecker(context)
        #: PostgreSQL only: other replicas' changes wake this one's long-polls.
        self.listener: ReplicaListener | None = None
        #: A tick found the database unreachable: the next one grants the outage grace first.
        self.outage = False

    def start(self) -> None:
        """Begin the background loops on the running event loop."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name="housekeeping"),
            loop.create_task(self._refresh_served(), name="served-models"),
            loop.create_task(self.rechecker.run(), name="long-poll-recheck"),
        ]
        db = self._context.db
        if not db.is_sqlite:
            self.listener = ReplicaListener(
                db.engine,
                db.replica_id,
                self._context.wakeups,
                self.rechecker.kick,
                key_cache=self._context.keys.cache,
                keys_changed=self.rechecker.keys_changed,
            )
            self.listener.start()

    async def stop(self) -> None:
        """Stop the loops and wait for their current steps to finish."""
        listener, self.listener = self.listener, None
        if listener is not None:
            await run_sync(listener.stop)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def tick(self) -> None:
        """One reaper tick: after an outage the lease grace, then the expiries.

        Raises what the database raised; a tick that found the database
        unreachable leaves :attr:`outage` set for the next one.
        """
        try:
            if self.outage:
                await run_sync(self._context.queue.grant_outage_grace)
                self.outage = False
            await self.expire_leases()
            await self.expire_unfinished()
        except Exception as exc:
            if database_unreachable(exc):
                self.outage = True
            raise

    async def expire_leases(self) -> list[str]:
        """One reaper step: requeue or fail jobs whose lease ran out, and wake waiters."""
        context = self._context
        expired = await run_sync(context.queue.expire_leases)
        if expired:
            logger.info("%d lease(s) expired: %s", len(expired), ", ".join(expired[:10]))
            context.metrics.lease_expiries.inc(len(expired))
            context.wakeups.queue_changed()
            context.wakeups.jobs_changed(expired)
        return expired

    async def expire_unfinished(self) -> list[str]:
        """Fail the QUEUED jobs older than ``max_queued_days``, and wake their polls."""
        context = self._context
        expired = await run_sync(context.queue.expire_unfinished)
        if expired:
            context.metrics.expired.inc(len(expired))
            context.wakeups.jobs_changed(expired)
        return expired

    async def purge(self) -> int:
        """One purge step: finished jobs past retention, long-gone nodes, then free pages."""
        context = self._context
        purged = await run_sync(context.queue.purge_finished)
        if purged:
            logger.info("purged %d finished job(s) past retention", purged)
            context.metrics.purged.inc(purged)
        forgotten = await run_sync(context.queue.purge_nodes)
        swept = await self.sweep_uploads()
        if purged or forgotten or swept:
            await run_sync(context.queue.reclaim_space)
        return purged

    async def sweep_uploads(self) -> int:
        """Delete uploads a crash left ``uploading`` for ``[openai] stale_upload_seconds``."""
        context = self._context
        store = FileStore(context.db)
        swept = await run_sync(store.sweep_uploading, context.settings.openai.stale_upload_seconds)
        if swept:
            logger.info("swept %d upload(s) left unfinished by a crash", swept)
        return swept

    async def _run(self) -> None:
        queue_settings = self._context.settings.queue
        next_purge = time.monotonic() + min(
            FIRST_PURGE_DELAY_SECONDS, queue_settings.purge_interval_seconds
        )
        ticks = RoundFailures(logger, "expiring leases and old jobs")
        purges = RoundFailures(logger, "purging finished jobs")
        while True:
            try:
                await self.tick()
            except Exception as exc:
                ticks.failed(exc)
            else:
                ticks.succeeded()
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + queue_settings.purge_interval_seconds
                try:
                    await self.purge()
                except Exception as exc:
                    self.outage = self.outage or database_unreachable(exc)
                    purges.failed(exc)
                else:
                    purges.succeeded()
            await asyncio.sleep(queue_settings.reap_interval_seconds)

    async def _refresh_served(self) -> None:
        queue = self._context.queue
        pause = SERVED_REFRESH_SECONDS
        failures = RoundFailures(logger, "re-reading the served models")
        while True:
            await asyncio.sleep(pause)
            started = time.monotonic()
            try:
                await run_sync(queue.refresh_served)
            except Exception as exc:
                failures.failed(exc)
            else:
                failures.succeeded()
            pause = next_served_refresh(time.monotonic() - started)
