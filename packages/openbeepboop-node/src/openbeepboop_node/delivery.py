"""Delivering outcomes: spool and send at once, one submit for everything that finished.

Outcomes that finish close together travel in one ``POST /internal/queue/submit``
(whatever finished while the previous submit was in flight, or within a few
milliseconds of each other). Results and errors are written to the
:class:`~openbeepboop_node.spool.Spool` and sent in the same instant: the
fsync (milliseconds) runs on the spool thread while the request is in
flight, so it no longer adds to every job's latency. That loses nothing a
write-then-send order would keep: a node killed before the fsync ends loses
the outcome either way (its lease expires and the job runs again), and the
copy on disk is what survives a server outage or a restart. An outcome is
deleted from the spool once the server acknowledged it, whatever the ack;
the deletion is queued behind the write on the same thread, so an ack that
arrives before the fsync ends still leaves nothing behind. A server that
cannot be reached is retried with backoff for as long as it takes.
Releases (leases handed back unworked) are not spooled: losing one only
means the job waits for its lease to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from openbeepboop_schemas import MAX_SUBMIT_OUTCOMES, Outcome, ReleaseOutcome, SubmitAck

from openbeepboop_node.backoff import Backoff, Connectivity
from openbeepboop_node.exceptions import ServerRequestError, ServerUnavailableError
from openbeepboop_node.queue_client import QueueClient
from openbeepboop_node.spool import OutcomeKey, Spool, outcome_key

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Acknowledged rows kept on disk at most before they get a deletion of their own.
MAX_ACKED_ON_DISK = 1000
SettledCallback = Callable[[Sequence[SubmitAck]], None]


class Deliverer:
    """Owns every outcome from the moment a job ends until the server acked it."""

    def __init__(
        self,
        client: QueueClient,
        spool: Spool,
        connectivity: Connectivity,
        backoff: Backoff,
        *,
        linger: float = 0.0,
        more_coming: Callable[[], bool] | None = None,
        on_settled: SettledCallback | None = None,
    ) -> None:
        self._client = client
        self._spool = spool
        self._connectivity = connectivity
        self._backoff = backoff
        self._linger = linger
        self._more_coming = more_coming
        self._on_settled = on_settled
        self._inbox: list[Outcome] = []
        self._durable: dict[OutcomeKey, asyncio.Future[None]] = {}
        self._pending: dict[OutcomeKey, Outcome] = {}
        self._spooled: set[OutcomeKey] = set()
        #: Acknowledged and still on disk: deleted along with the next write.
        self._acked: list[OutcomeKey] = []
        self._retry_at = 0.0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        # One thread for the spool: its fsyncs never stall the event loop and
        # its writes stay in order.
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="openbeepboop-spool")
        self.attempts = 0
        self.acks: dict[str, int] = {}

    @property
    def backlog(self) -> int:
        """Outcomes not yet acknowledged (queued, spooled or in flight)."""
        return len(self._inbox) + len(self._pending)

    def put(self, outcome: Outcome) -> asyncio.Future[None]:
        """Hand over a finished job's outcome (never blocks).

        The returned future is done once the outcome is on disk (at once for
        a release), so "finished" is only ever logged for a durable result.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._durable[outcome_key(outcome)] = done
        self._inbox.append(outcome)
        self._idle.clear()
        self._wake.set()
        return done

    async def restore(self) -> int:
        """Take over what a previous run left in the spool; returns how many."""
        outcomes = await self._on_disk(self._spool.pending)
        for outcome in outcomes:
            key = outcome_key(outcome)
            self._pending[key] = outcome
            self._spooled.add(key)
        if outcomes:
            self._idle.clear()
            self._wake.set()
            logger.info("delivering %d result(s) kept from an earlier run", len(outcomes))
        return len(outcomes)

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until everything handed over has been acknowledged; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def undelivered_results(self) -> int:
        """Results and errors handed over but not acknowledged (releases not counted)."""
        outcomes = [*self._inbox, *self._pending.values()]
        return sum(1 for o in outcomes if not isinstance(o, ReleaseOutcome))

    async def persist(self) -> None:
        """Spool whatever was handed over but not yet spooled (after :meth:`run` ended)."""
        batch, self._inbox = self._inbox, []
        writes = [work for work in (self._accept(batch), self._flush_acked()) if work is not None]
        if writes:
            await asyncio.wait(writes)

    def retry_now(self) -> None:
        """Skip the current backoff wait (e.g. the server just answered another call)."""
        self._retry_at = 0.0
        self._wake.set()

    def close(self) -> None:
        """Stop the spool thread (after :meth:`run` has ended)."""
        self._disk.shutdown(wait=True)

    async def run(self) -> None:
        """Deliver until cancelled; raises KeyRejectedError if the key is refused."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._inbox and not self._pending:
                self._flush_acked()  # no write is coming soon to carry the deletions
                self._idle.set()
                await self._wake.wait()
            self._wake.clear()
            if self._inbox:
                if self._linger and (self._more_coming is None or self._more_coming()):
                    # Only worth waiting when another outcome may join the batch.
                    await asyncio.sleep(self._linger)
                batch, self._inbox = self._inbox, []
                self._accept(batch)  # the spool write runs while the batch is sent
            if not self._pending:
                continue
            delay = self._retry_at - loop.time()
            if delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            await self._send(list(self._pending.values())[:MAX_SUBMIT_OUTCOMES])

    def _accept(self, batch: list[Outcome]) -> asyncio.Future[None] | None:
        """Make ``batch`` sendable now and start writing it to the spool.

        Returns the spool write (None when nothing in the batch is spooled).
        Its keys count as spooled from this moment: a deletion after an ack
        is queued behind the write on the one spool thread, so it always
        finds the row.
        """
        durable: list[Outcome] = []
        for outcome in batch:
            key = outcome_key(outcome)
            self._pending[key] = outcome
            if isinstance(outcome, ReleaseOutcome):
                self._resolve_durable(key)
            else:
                durable.append(outcome)
        if not durable:
            return None
        keys = [outcome_key(o) for o in durable]
        self._spooled.update(keys)
        loop = asyncio.get_running_loop()
        forget, self._acked = self._acked, []
        write = loop.run_in_executor(self._disk, self._spool.add, durable, forget)
        write.add_done_callback(lambda done: self._written(keys, done))
        return write

    def _written(self, keys: list[OutcomeKey], write: asyncio.Future[None]) -> None:
        """The spool write for ``keys`` ended: log a failure, let "finished" be logged."""
        failure = _failure(write)
        if failure is not None:
            # Still deliverable from memory; only a crash now would lose them.
            logger.error("%s; delivering %d result(s) unspooled", failure, len(keys))
            self._spooled.difference_update(keys)
        for key in keys:
            self._resolve_durable(key)

    def _resolve_durable(self, key: OutcomeKey) -> None:
        done = self._durable.pop(key, None)
        if done is not None and not done.done():
            done.set_result(None)

    async def _send(self, batch: list[Outcome]) -> None:
        loop = asyncio.get_running_loop()
        self.attempts += 1
        try:
            acks = await self._client.submit(batch)
        except ServerUnavailableError as exc:
            self._connectivity.failed(exc)
            self._retry_at = loop.time() + self._backoff.next_delay(exc.retry_after)
            return
        except ServerRequestError as exc:
            await self._refused(batch, exc)
            return
        self._connectivity.succeeded()
        self._backoff.reset()
        self._settle(batch, acks)

    async def _refused(self, batch: list[Outcome], exc: ServerRequestError) -> None:
        # One bad outcome must not hold the others back: send them one by one,
        # and drop (loudly) only the one the server will never take.
        if len(batch) > 1:
            for outcome in batch:
                await self._send([outcome])
            return
        (outcome,) = batch
        logger.error("job %s: server refused its outcome, dropping it: %s", outcome.job_id, exc)
        self._forget([outcome_key(outcome)])

    def _settle(self, batch: list[Outcome], acks: list[SubmitAck]) -> None:
        if len(acks) == len(batch):
            answered = list(zip(batch, acks, strict=True))
        else:  # a server that skipped some: match by job; the rest goes again
            by_job = {ack.job_id: ack for ack in acks}
            answered = [(o, by_job[o.job_id]) for o in batch if o.job_id in by_job]
        settled: list[OutcomeKey] = []
        for outcome, ack in answered:
            settled.append(outcome_key(outcome))
            self.acks[ack.ack] = self.acks.get(ack.ack, 0) + 1
            if ack.ack == "stale":
                logger.warning(
                    "job %s: server ignored the %s (lease lost or job already finished)",
                    outcome.job_id,
                    outcome.kind,
                )
            elif ack.ack == "rejected":
                logger.warning("job %s: server says this node never held the lease", outcome.job_id)
            else:
                logger.debug("job %s: %s %s", outcome.job_id, outcome.kind, ack.ack)
        self._forget(settled)
        if self._on_settled is not None:
            self._on_settled(acks)

    def _forget(self, keys: list[OutcomeKey]) -> None:
        """Drop acknowledged outcomes; their spool rows go with the next spool write.

        A deletion of its own would cost the spool thread a transaction per
        submit; the next write (queued after the one that stored the row)
        carries it instead, or :meth:`_flush_acked` once nothing is left to
        send. Never awaited, so a submit never waits behind the spool.
        """
        for key in keys:
            self._pending.pop(key, None)
        on_disk = [key for key in keys if key in self._spooled]
        if on_disk:
            self._spooled.difference_update(on_disk)
            self._acked.extend(on_disk)
            if len(self._acked) >= MAX_ACKED_ON_DISK:
                self._flush_acked()

    def _flush_acked(self) -> asyncio.Future[None] | None:
        """Delete the acknowledged rows now, in a transaction of their own; None if none."""
        if not self._acked:
            return None
        forget, self._acked = self._acked, []
        removal = asyncio.get_running_loop().run_in_executor(self._disk, self._spool.remove, forget)
        removal.add_done_callback(_log_removal_failure)
        return removal

    async def _on_disk(self, func: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._disk, func, *args)


def _log_removal_failure(removal: asyncio.Future[None]) -> None:
    failure = _failure(removal)
    if failure is not None:
        # Harmless: a later run resends the outcome and gets "duplicate".
        logger.error("%s", failure)


def _failure(work: asyncio.Future[None]) -> BaseException | None:
    """What a finished spool-thread call raised (None if it succeeded or was cancelled)."""
    return None if work.cancelled() else work.exception()
