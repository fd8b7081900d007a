"""Delivering outcomes: send at once, spool what the server has not acknowledged.

Outcomes that finish close together travel in one ``POST /internal/queue/submit``
(whatever finished while the previous submit was in flight, or within a few
milliseconds of each other). The :class:`~openbeepboop_node.spool.Spool` is
written behind the send: an outcome goes to disk only if the server has not
acknowledged it within ``spool_after`` seconds of its :meth:`Deliverer.put`
(whatever a submit in flight is doing meanwhile), or at once when a submit
fails (the server is down or unreachable), or at shutdown. A healthy server
acknowledges within milliseconds, after committing the result, so a busy
node's results normally never touch the disk: the spool is for results the
server does not have. An outcome is durable from the moment either holds it
(the job's line is logged only then), so a ``kill -9`` after that line loses
nothing. A kill in the instant before it (the submit in flight, at most
``spool_after`` seconds) loses the outcome, as a kill during the fsync of a
write-first spool would: the lease expires and the job runs again.

Why not write every outcome while its submit is in flight: every SQLite
statement hands Python's GIL to the spool thread and back, and on a node
whose event loop is busy with LiteLLM those hand-overs cost more throughput
than anything else the node does (docs/performance.md, "Write-behind
spool").
``spool_after = 0`` writes every outcome that way (one handed over while a
submit is in flight: at once, not when that submit ends).

A spool write that fails (a full disk) leaves its outcomes where they were:
sendable from memory, not durable (their jobs are not logged yet), and
written again ``SPOOL_RETRY_SECONDS`` later, with any new ones (nothing,
not a failed submit nor a new result, writes sooner), and by
:meth:`Deliverer.persist` at shutdown; what is still on neither the server
nor the disk then is counted by :meth:`Deliverer.unwritten_results`, for the
node to report as lost. The first failure is logged as an error, the
retries that fail too are not, and the first write that works again says
so: one pair of lines per outage of the disk, like the server's.

A spooled outcome is deleted once the server acknowledged it, whatever the
ack; the deletion is queued behind the write on the same thread, so an ack
that arrives before the fsync ends still leaves nothing behind. A server that
cannot be reached is retried with backoff for as long as it takes. Releases
(leases handed back unworked) are spooled only by :meth:`Deliverer.persist`
and :meth:`Deliverer.persist_now`, at exit: while the node runs they are
retried from memory, and a release the server never got costs the job an
attempt when its lease expires, which the next start saves by delivering it
first (a release that comes too late is answered ``stale`` and changes
nothing). A release's ``on_durable`` is told once the server has taken the
lease back (``accepted`` or ``duplicate``), or a :class:`NotKept`: a release
counts as done only then, not when it is handed over.

From a failed submit until the server answers one, the deliverer is
:attr:`~Deliverer.stalled`, and the fetch loop takes no new jobs meanwhile
(:mod:`~openbeepboop_node.fetching`): results the node cannot hand back must
not pile up. A submit that timed out is often still being done by a busy
server, which acks the resent results ``duplicate``, so each retry after a
timeout is given longer to answer than the one before (up to the lease:
``patience`` in :meth:`~openbeepboop_node.queue_client.QueueClient.submit`)
rather than cut and sent again at the same pace.

A result the server refuses as too large (HTTP 413 on a submit holding
that result alone) is never dropped: it is delivered instead as a permanent
error of type ``result_too_large`` naming its size and the server's limit,
so the job ends ``FAILED`` with a reason the user can read. A batch refused
with 413 is halved until the too-large result(s) stand alone. A result the
server refuses otherwise (HTTP 400: it does not take it as a chat
completion) is delivered likewise, as a permanent error of type
``invalid_response`` carrying the server's message. Whoever handed the
result over hears of it: ``on_durable`` is called with the failure instead
of the result if it was not durable yet, and called again, with the
failure, if it already was (a result on disk before the server refused it).
An error or release the
server refuses is dropped, and ``on_dropped`` tells the job runner its lease
is no longer held: heartbeating it would keep the job ``PROCESSING`` for
ever; left alone, the lease expires and the queue's retry rules apply.

A result or error the server acknowledges without keeping it (``stale``: the
lease had expired or the job was already finished or cancelled;
``rejected``: the node never held the lease) is told to ``on_durable`` as
:class:`NotKept`, whether or not it was told as durable before: the job's
line says the server did not keep it. Outcomes an earlier run left in the
spool (:meth:`Deliverer.restore`) are told once the server has answered them,
so the run that delivers them can log and count them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import TypeVar

from openbeepboop_schemas import (
    MAX_SUBMIT_OUTCOMES,
    AckStatus,
    ErrorOutcome,
    Outcome,
    ReleaseOutcome,
    ResultOutcome,
    SubmitAck,
)

from openbeepboop_node.backoff import Backoff, Connectivity
from openbeepboop_node.exceptions import ServerRequestError, ServerUnavailableError
from openbeepboop_node.oversized import refused_failure, too_large_failure
from openbeepboop_node.queue_client import QueueClient
from openbeepboop_node.spool import OutcomeKey, Spool, outcome_key

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Acknowledged rows kept on disk at most before they get a deletion of their own.
MAX_ACKED_ON_DISK = 1000
#: After a failed spool write, how long until its outcomes are written again.
SPOOL_RETRY_SECONDS = 5.0
SettledCallback = Callable[[Sequence[SubmitAck]], None]
#: The acks by which the server says it did not keep an outcome (see :class:`NotKept`).
NOT_KEPT_ACKS: frozenset[AckStatus] = frozenset({"stale", "rejected"})


@dataclass(frozen=True)
class NotKept:
    """An outcome the server acknowledged without keeping it (ack ``stale`` or ``rejected``)."""

    outcome: Outcome
    ack: SubmitAck

    def reason(self) -> str:
        """Why, in a few words, for the job's line (``stale: ...``)."""
        if self.ack.ack == "rejected":
            return "rejected: the server says this node never held its lease"
        status = f"; the job is {self.ack.status}" if self.ack.status else ""
        return "stale: the lease had expired, or the job was already finished or cancelled" + status


#: Told the outcome a job ended with once it is durable (see :meth:`Deliverer.put`),
#: and a :class:`NotKept` if the server did not keep it.
DurableCallback = Callable[[Outcome | NotKept], None]


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
        spool_after: float = 0.0,
        more_coming: Callable[[], bool] | None = None,
        on_settled: SettledCallback | None = None,
        on_dropped: Callable[[Outcome], None] | None = None,
    ) -> None:
        self._client = client
        self._spool = spool
        self._connectivity = connectivity
        self._backoff = backoff
        self._linger = linger
        self._spool_after = spool_after
        self._more_coming = more_coming
        self._on_settled = on_settled
        self._on_dropped = on_dropped
        #: Handed over since the loop last lingered for more (all in ``_pending`` too).
        self._fresh = 0
        #: True while a submit is in flight (``_send``'s await).
        self._sending = False
        self._durable: dict[OutcomeKey, asyncio.Future[None]] = {}
        #: Whom to tell once each outcome is durable, or that it became a failure;
        #: kept until the server acknowledged it.
        self._reports: dict[OutcomeKey, _Report] = {}
        self._pending: dict[OutcomeKey, Outcome] = {}
        self._spooled: set[OutcomeKey] = set()
        #: Neither on disk nor acknowledged yet: when each was handed over.
        self._unspooled: dict[OutcomeKey, float] = {}
        self._spool_timer: asyncio.TimerHandle | None = None
        #: No spool write before this (loop time): the last one failed.
        self._spool_retry_at = 0.0
        #: Spool writes started and not ended yet.
        self._writing: set[asyncio.Future[None]] = set()
        #: Why the last spool write failed; None once one succeeded.
        self.spool_failure: BaseException | None = None
        #: When the spool's writes began to fail (loop time); None while they work.
        self._spool_down_since: float | None = None
        #: Acknowledged and still on disk: deleted along with the next write.
        self._acked: list[OutcomeKey] = []
        self._retry_at = 0.0
        #: Submits in a row that timed out (the next one is given longer).
        self._timeouts = 0
        #: Clear from a failed submit until the server answers one.
        self._flowing = asyncio.Event()
        self._flowing.set()
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
        return len(self._pending)

    @property
    def stalled(self) -> bool:
        """True from a submit that failed until the server answers one: outcomes pile up."""
        return not self._flowing.is_set()

    async def wait_flowing(self) -> None:
        """Wait until :attr:`stalled` is False."""
        await self._flowing.wait()

    def put(
        self, outcome: Outcome, on_durable: DurableCallback | None = None
    ) -> asyncio.Future[None]:
        """Hand over a finished job's outcome (never blocks).

        The returned future is done once the outcome is durable: acknowledged
        by the server or on disk (at once for a release), so "finished" is
        only ever logged for a durable result. ``on_durable`` is called then
        (before the future's callbacks run; for a release: once the server
        has answered it) with what is durable: the
        outcome, or the failure delivered instead of a result the server
        refused; and once more, with that failure, if the server refused a
        result already on disk. If the server acknowledges it without
        keeping it, ``on_durable`` is called with a :class:`NotKept`
        instead, or once more if it was told already. A result's ``spool_after`` clock starts
        here: a submit in flight (which may take up to its read timeout)
        never holds its write back.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        key = outcome_key(outcome)
        self._durable[key] = done
        if on_durable is not None:
            self._reports[key] = _Report(on_durable, outcome)
        self._pending[key] = outcome
        self._fresh += 1
        if isinstance(outcome, ReleaseOutcome):
            self._resolve_durable(key)
        else:
            self._unspooled[key] = loop.time()
            if self._spool_after > 0 or self._sending:
                # Otherwise the loop writes it along with its send, after the linger.
                self._arm_spool_timer()
        self._idle.clear()
        self._wake.set()
        return done

    async def restore(self, on_delivered: DurableCallback | None = None) -> int:
        """Take over what a previous run left in the spool; returns how many.

        ``on_delivered`` is told each of them once the server has answered
        it (they are durable already), as :meth:`put`'s ``on_durable`` is:
        the outcome the server kept, or a :class:`NotKept`.
        """
        outcomes = await self._on_disk(self._spool.pending)
        releases = 0
        for outcome in outcomes:
            releases += isinstance(outcome, ReleaseOutcome)
            key = outcome_key(outcome)
            self._pending[key] = outcome
            self._spooled.add(key)
            if on_delivered is not None:
                self._reports[key] = _Report(on_delivered, outcome)
        if outcomes:
            self._idle.clear()
            self._wake.set()
            if releases:
                logger.info(
                    "delivering %d result(s) and %d lease release(s) kept from an earlier run",
                    len(outcomes) - releases,
                    releases,
                )
            else:
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
        return sum(1 for o in self._pending.values() if not isinstance(o, ReleaseOutcome))

    def unwritten_results(self) -> int:
        """Results and errors neither acknowledged nor on disk (after :meth:`persist`: lost)."""
        return len(self._unspooled)

    def undelivered_releases(self) -> list[tuple[ReleaseOutcome, bool]]:
        """Releases handed over but not acknowledged, each with whether it is on disk."""
        return [
            (outcome, key in self._spooled)
            for key, outcome in self._pending.items()
            if isinstance(outcome, ReleaseOutcome)
        ]

    def _unwritten_releases(self) -> list[OutcomeKey]:
        return [
            key
            for key, outcome in self._pending.items()
            if isinstance(outcome, ReleaseOutcome) and key not in self._spooled
        ]

    async def persist(self) -> None:
        """Spool whatever is not acknowledged and not on disk yet (after :meth:`run` ended).

        Releases too: the next start delivers them, and one that comes
        before the lease expires saves the job the attempt its expiry costs.
        Waits for the writes in flight first, so that what one of them failed
        to write is tried once more here, whatever its retry delay.
        """
        if self._writing:
            await asyncio.wait(set(self._writing))
        keys = [*self._unspooled, *self._unwritten_releases()]
        writes = [w for w in (self._to_disk(keys), self._flush_acked()) if w]
        if writes:
            await asyncio.wait(writes)

    def persist_now(self) -> tuple[int, int]:
        """Write what is neither acknowledged nor on disk, on this thread.

        For a process about to exit at once (a second signal): nothing else
        will run, so this blocks the event loop for the one transaction
        (waiting for a spool write in flight to finish first). Returns how
        many results (and errors) and how many releases it wrote.
        """
        releases = self._unwritten_releases()
        keys = [*self._unspooled, *releases]
        if keys:
            self._spool.add([self._pending[key] for key in keys])
            self._unspooled.clear()
            self._spooled.update(releases)
        return len(keys) - len(releases), len(releases)

    def retry_now(self) -> None:
        """Skip the current backoff wait (e.g. the server just answered another call)."""
        self._retry_at = 0.0
        self._wake.set()

    def close(self) -> None:
        """Stop the spool thread (after :meth:`run` has ended)."""
        if self._spool_timer is not None:
            self._spool_timer.cancel()
            self._spool_timer = None
        self._disk.shutdown(wait=True)

    async def run(self) -> None:
        """Deliver until cancelled; raises KeyRejectedError if the key is refused."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._flush_acked()  # no write is coming soon to carry the deletions
                self._idle.set()
                await self._wake.wait()
            self._wake.clear()
            if self._fresh:
                if self._linger and (self._more_coming is None or self._more_coming()):
                    # Only worth waiting when another outcome may join the batch.
                    await asyncio.sleep(self._linger)
                self._fresh = 0
                if self._spool_after <= 0:
                    self._spool_unwritten()  # written while the batch is sent
            if not self._pending:
                continue
            delay = self._retry_at - loop.time()
            if delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            self._sending = True
            try:
                await self._send(list(self._pending.values())[:MAX_SUBMIT_OUTCOMES])
            finally:
                self._sending = False

    def _spool_unwritten(self) -> None:
        """Write every outcome not on disk yet, now, unless a failed write asked for a pause.

        During the pause the timer writes them once it is over: a failed
        submit (retried every backoff step) or a new result does not make
        the disk be tried again sooner.
        """
        if asyncio.get_running_loop().time() < self._spool_retry_at:
            self._arm_spool_timer()
            return
        self._to_disk(list(self._unspooled))

    def _arm_spool_timer(self) -> None:
        """Wake :meth:`_spool_due` when the oldest unacknowledged outcome is due.

        Due ``spool_after`` seconds after its :meth:`put` (with ``spool_after
        <= 0``: on the loop's next turn, so outcomes handed over together
        share one write).
        """
        if self._spool_timer is not None or not self._unspooled:
            return
        oldest = next(iter(self._unspooled.values()))
        loop = asyncio.get_running_loop()
        due = max(oldest + self._spool_after, self._spool_retry_at)
        self._spool_timer = loop.call_at(due, self._spool_due)

    def _spool_due(self) -> None:
        self._spool_timer = None
        now = asyncio.get_running_loop().time()
        if now < self._spool_retry_at:  # armed before a write failed: wait for the retry
            self._arm_spool_timer()
            return
        deadline = now - self._spool_after
        # Oldest first (handed over in that order): stop at the first one not due.
        due = list(
            itertools.takewhile(lambda key: self._unspooled[key] <= deadline, self._unspooled)
        )
        self._to_disk(due)
        self._arm_spool_timer()

    def _to_disk(self, keys: list[OutcomeKey]) -> asyncio.Future[None] | None:
        """Start writing these outcomes to the spool; returns the write (None if no keys).

        Their keys count as spooled from this moment: a deletion after an
        ack is queued behind the write on the one spool thread, so it
        always finds the row. Acknowledged rows still on disk are deleted
        in the same transaction.
        """
        if not keys:
            return None
        for key in keys:
            self._unspooled.pop(key, None)  # not there for a release
        self._spooled.update(keys)
        outcomes = [self._pending[key] for key in keys]
        forget, self._acked = self._acked, []
        loop = asyncio.get_running_loop()
        write = loop.run_in_executor(self._disk, self._spool.add, outcomes, forget)
        self._writing.add(write)
        write.add_done_callback(lambda done: self._written(keys, forget, done))
        return write

    def _written(
        self, keys: list[OutcomeKey], forget: list[OutcomeKey], write: asyncio.Future[None]
    ) -> None:
        """The spool write for ``keys`` ended: let "finished" be logged, or try again later."""
        self._writing.discard(write)
        failure = _failure(write)
        now = asyncio.get_running_loop().time()
        if failure is None:
            if self._spool_down_since is not None:
                logger.warning(
                    "the result spool %s takes writes again after %.1f s",
                    self._spool.path,
                    now - self._spool_down_since,
                )
                self._spool_down_since = None
            self.spool_failure = None
            for key in keys:
                self._resolve_durable(key)
            return
        self.spool_failure = failure
        # Not on disk: back among the unwritten (unless acknowledged meanwhile),
        # written again after a pause, and by persist() at shutdown at the latest.
        again = [key for key in keys if key in self._spooled]
        self._spooled.difference_update(again)
        for key in keys:
            if key in again:
                if not isinstance(self._pending.get(key), ReleaseOutcome):
                    self._unspooled[key] = now
            else:  # acknowledged while it was being written: durable at the server
                self._resolve_durable(key)
        self._acked.extend(forget)  # their deletion goes with the next write
        self._spool_retry_at = now + SPOOL_RETRY_SECONDS
        if self._spool_down_since is None:
            self._spool_down_since = now
            logger.error(
                "%s; results stay only in memory until it can be written, tried every %g s",
                failure,
                SPOOL_RETRY_SECONDS,
            )
        else:  # the outage goes on: said once, at its start
            logger.debug("%s; %d result(s) only in memory", failure, len(self._unspooled))
        self._arm_spool_timer()

    def _resolve_durable(self, key: OutcomeKey) -> None:
        report = self._reports.get(key)
        if report is not None:
            report.durable()
        done = self._durable.pop(key, None)
        if done is not None and not done.done():
            done.set_result(None)

    async def _send(self, batch: list[Outcome]) -> None:
        loop = asyncio.get_running_loop()
        self.attempts += 1
        try:
            acks = await self._client.submit(batch, patience=self._timeouts)
        except ServerUnavailableError as exc:
            if exc.timed_out:
                self._timeouts += 1
            self._flowing.clear()
            self._connectivity.failed(exc, delivery=True)
            self._retry_at = loop.time() + self._backoff.next_delay(exc.retry_after)
            # No ack is coming soon: what is not on disk yet goes there now.
            self._spool_unwritten()
            return
        except ServerRequestError as exc:
            self._answered()
            await self._refused(batch, exc)
            return
        self._answered()
        if self._settle(batch, acks):
            self._backoff.reset()
            return
        # A server that left outcomes unanswered gets them again after a
        # pause, as after an outage: at once, a broken one was sent thousands
        # of submits a second.
        logger.warning("the server answered %d of %d outcomes", len(acks), len(batch))
        self._retry_at = loop.time() + self._backoff.next_delay()

    def _answered(self) -> None:
        """The server answered a submit: it takes deliveries again."""
        self._timeouts = 0
        self._flowing.set()
        self._connectivity.succeeded(delivery=True)

    async def _refused(self, batch: list[Outcome], exc: ServerRequestError) -> None:
        # One bad outcome must not hold the others back: send them one by one,
        # and drop (loudly) only the one the server will never take. A batch
        # too large for the server's body limit is halved instead: the halves
        # may go through whole, and a too-large result is found in log2(n) steps.
        too_large = exc.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
        if len(batch) > 1:
            middle = len(batch) // 2
            parts = [batch[:middle], batch[middle:]] if too_large else [[o] for o in batch]
            for part in parts:
                await self._send(part)
            return
        (outcome,) = batch
        if isinstance(outcome, ResultOutcome):
            if too_large:
                failure = too_large_failure(outcome, exc.detail)
            else:
                failure = refused_failure(outcome, exc.status_code, exc.detail or str(exc))
            await self._send([self._instead(outcome, failure)])
            return
        logger.error(
            "job %s: server refused its outcome, dropping it and its lease: %s",
            outcome.job_id,
            exc,
        )
        self._forget([outcome_key(outcome)])
        if self._on_dropped is not None:
            self._on_dropped(outcome)

    def _instead(self, outcome: ResultOutcome, failure: ErrorOutcome) -> ErrorOutcome:
        """Deliver a result the server will never take as its failure (see the module doc)."""
        key = outcome_key(outcome)
        self._pending[key] = failure
        report = self._reports.get(key)
        if report is None:  # nobody to tell (restored without a callback): no job line says it
            logger.warning(
                "job %s: %s; delivering that as its failure", outcome.job_id, failure.error.message
            )
        else:
            report.replaced(failure)
        return failure

    def _settle(self, batch: list[Outcome], acks: list[SubmitAck]) -> bool:
        """Forget what the server answered; True if it answered every outcome of ``batch``."""
        if len(acks) == len(batch):
            answered = list(zip(batch, acks, strict=True))
        else:  # a server that skipped some: match by job; the rest goes again
            by_job = {ack.job_id: ack for ack in acks}
            answered = [(o, by_job[o.job_id]) for o in batch if o.job_id in by_job]
        settled: list[OutcomeKey] = []
        for outcome, ack in answered:
            key = outcome_key(outcome)
            settled.append(key)
            self.acks[ack.ack] = self.acks.get(ack.ack, 0) + 1
            report = self._reports.get(key)
            if report is not None and ack.ack in NOT_KEPT_ACKS:
                report.not_kept(ack)  # the job's line says it
            elif report is not None and isinstance(outcome, ReleaseOutcome):
                report.released()  # the server took the lease back
            elif ack.ack == "stale":
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
        return len(answered) == len(batch)

    def _forget(self, keys: list[OutcomeKey]) -> None:
        """Drop acknowledged outcomes; their spool rows go with the next spool write.

        An outcome the server took before it was spooled is durable there
        and never written. A deletion of its own would cost the spool thread
        a transaction per submit; the next write (queued after the one that
        stored the row) carries it instead, or :meth:`_flush_acked` once
        nothing is left to send. Never awaited, so a submit never waits
        behind the spool.
        """
        for key in keys:
            self._pending.pop(key, None)
            if self._unspooled.pop(key, None) is not None:
                self._resolve_durable(key)
            report = self._reports.pop(key, None)
            if report is not None:  # acknowledged, so durable (even if a write is in flight)
                report.durable()
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


class _Report:
    """Tells a job's owner its outcome once durable, and of a failure that replaced it."""

    def __init__(self, callback: DurableCallback, outcome: Outcome) -> None:
        self._callback = callback
        self._outcome = outcome
        self._told = False

    def durable(self) -> None:
        """The outcome is durable: tell it (once). Not a release: see :meth:`released`."""
        if not self._told and not isinstance(self._outcome, ReleaseOutcome):
            self._told = True
            self._callback(self._outcome)

    def released(self) -> None:
        """The server took the released lease back: tell it (once)."""
        if not self._told:
            self._told = True
            self._callback(self._outcome)

    def replaced(self, failure: ErrorOutcome) -> None:
        """The server refused the result: it is ``failure`` now (told at once if already told)."""
        self._outcome = failure
        if self._told:
            self._callback(failure)

    def not_kept(self, ack: SubmitAck) -> None:
        """The server acknowledged the outcome without keeping it: tell that, told before or not."""
        self._told = True
        self._callback(NotKept(self._outcome, ack))


def _log_removal_failure(removal: asyncio.Future[None]) -> None:
    failure = _failure(removal)
    if failure is not None:
        # Harmless: a later run resends the outcome and gets "duplicate".
        logger.error("%s", failure)


def _failure(work: asyncio.Future[None]) -> BaseException | None:
    """What a finished spool-thread call raised (None if it succeeded or was cancelled)."""
    return None if work.cancelled() else work.exception()
