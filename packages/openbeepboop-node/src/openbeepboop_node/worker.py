"""The node itself: claim jobs, run them concurrently, deliver, shut down cleanly.

:class:`Node` runs three loops on one event loop and one HTTP connection pool:

- fetch: long-polls for as many leases as the node has room for (one
  request, many leases) and starts each as a task. Room is ``concurrency``
  slots (LLM calls at once) plus leases that wait in the node for a slot, so
  a slot that frees starts its next job at once instead of after a fetch
  round trip; how many wait is sized by :mod:`~openbeepboop_node.prefetch`
  (up to ``prefetch``). It asks again when a lease ends, not when a whole
  batch is done: at once on an idle node or when the waiting leases would
  run out before a fetch returns, otherwise after at most ``fetch_linger``
  (so one fetch brings several leases instead of one request per finished
  job);
- heartbeat (:mod:`~openbeepboop_node.heartbeat`): keeps held leases alive and
  aborts jobs the server reports cancelled or lost;
- delivery (:mod:`~openbeepboop_node.delivery`): spools outcomes, then submits
  them in batches.

``run`` works until :meth:`Node.stop` (the CLI calls it on SIGINT/SIGTERM):
fetching stops, running jobs get ``shutdown_grace`` seconds to finish, the
rest are aborted and their leases released so they requeue at once, and
everything finished is delivered. ``run_batch`` works through what is queued
and returns when the server has nothing left for this node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field

from openbeepboop_schemas import (
    MAX_FETCH_JOBS,
    ErrorOutcome,
    Lease,
    LeaseRef,
    NodeError,
    Outcome,
    ReleaseOutcome,
    ResultOutcome,
    SubmitAck,
)

from openbeepboop_node.backoff import Backoff, Connectivity
from openbeepboop_node.config import NodeConfig
from openbeepboop_node.delivery import Deliverer
from openbeepboop_node.exceptions import (
    InferenceError,
    KeyRejectedError,
    ServerRequestError,
    ServerUnavailableError,
    SpoolError,
)
from openbeepboop_node.heartbeat import Heartbeater
from openbeepboop_node.inference import Inference
from openbeepboop_node.prefetch import PrefetchSizer
from openbeepboop_node.queue_client import QueueClient
from openbeepboop_node.spool import Spool

logger = logging.getLogger(__name__)

#: After shutdown, how long ``run`` keeps trying to deliver before leaving the
#: rest in the spool for the next start (at most; never more than the grace
#: period, never less than SHUTDOWN_DELIVERY_MIN_SECONDS).
SHUTDOWN_DELIVERY_SECONDS = 10.0
SHUTDOWN_DELIVERY_MIN_SECONDS = 1.0
#: A fetch that comes back empty sooner than this (a server that does not
#: long-poll) is followed by a pause, so an idle node never spins.
MIN_EMPTY_FETCH_SECONDS = 0.5


@dataclass
class RunSummary:
    """What one ``run`` or ``run_batch`` did."""

    completed: int = 0
    failed: int = 0
    aborted: int = 0
    released: int = 0
    undelivered: int = 0
    acks: dict[str, int] = field(default_factory=dict)


class Node:
    """One node: the configured models, a concurrency limit, one queue server."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        version: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.inference = Inference(config, environ)
        self.client = QueueClient(
            config.server_url,
            config.api_key.get_secret_value(),
            config.node_id,
            version=version,
            fetch_wait=config.fetch_wait,
        )
        self.connectivity = Connectivity(config.server_url)
        self.summary = RunSummary()
        self._models = config.model_names()
        self._spool: Spool | None = None
        self._deliverer: Deliverer | None = None
        self._heartbeater: Heartbeater | None = None
        self._held: dict[str, Lease] = {}
        #: Every held job's task: running, or waiting for a slot (prefetched).
        self._jobs: dict[str, asyncio.Task[None]] = {}
        #: The tasks that hold a slot (their LLM call may be in flight). Tasks,
        #: not job ids: a job leased again runs as a new task beside the old one
        #: for a moment.
        self._calling: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(config.concurrency)
        self._prefetch = PrefetchSizer(config.prefetch_leases())
        self._abort_reasons: dict[str, str] = {}
        self._stopping = asyncio.Event()
        self._slot_free = asyncio.Event()

    # -- control ---------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping.is_set()

    @property
    def running_jobs(self) -> int:
        """Jobs holding a slot right now (at most ``concurrency``)."""
        return len(self._calling)

    @property
    def held_jobs(self) -> int:
        """Jobs leased to this node: running, or prefetched and waiting for a slot."""
        return len(self._jobs)

    def stop(self) -> None:
        """Stop fetching and shut down gracefully (safe to call more than once)."""
        self._stopping.set()
        self._slot_free.set()

    def persist_now(self) -> None:
        """Put finished results the server has not acknowledged on disk, now.

        Called just before the process exits without a shutdown (a second
        signal): they are sent by the next start instead of being lost.
        """
        if self._deliverer is None:
            return
        try:
            kept = self._deliverer.persist_now()
        except SpoolError as exc:
            logger.error("%s", exc)
            return
        if kept:
            logger.warning("%d unacknowledged result(s) kept in the spool", kept)

    async def run(self) -> RunSummary:
        """Work until :meth:`stop`; returns what was done."""
        return await self._serve(batch=False)

    async def run_batch(self) -> RunSummary:
        """Work until the server has nothing queued for this node's models.

        Raises ServerUnavailableError when the server cannot be reached at first, or
        stays unreachable longer than ``batch_give_up`` seconds later on, and
        when results could not all be delivered (they stay in the spool).
        """
        return await self._serve(batch=True)

    @property
    def _room(self) -> int:
        """Leases the node may hold now: its slots and the waiting leases it wants."""
        return self.config.concurrency + self._prefetch.target

    # -- the loops -------------------------------------------------------

    async def _serve(self, batch: bool) -> RunSummary:
        config = self.config
        background: list[asyncio.Task[None]] = []
        try:
            self._spool = Spool(config.resolved_spool_path())
            self._deliverer = Deliverer(
                self.client,
                self._spool,
                self.connectivity,
                Backoff(config.backoff_initial, config.backoff_max),
                linger=config.submit_linger,
                spool_after=config.spool_after,
                more_coming=self._jobs_in_flight,
                on_settled=self._settled,
            )
            self._heartbeater = Heartbeater(
                self.client,
                self.connectivity,
                leases=self._lease_refs,
                lease_seconds=self._lease_seconds,
                on_gone=self._gone,
                models=self._models,
                interval=config.heartbeat_interval,
            )
            self._log_start(batch)
            await self._deliverer.restore()
            background.append(asyncio.create_task(self._deliverer.run(), name="delivery"))
            background.append(asyncio.create_task(self._heartbeater.run(), name="heartbeat"))
            # LiteLLM takes seconds to import; spooled results go out meanwhile.
            await self._until_done(asyncio.to_thread(self.inference.load), background)
            fetching = asyncio.create_task(self._fetch_loop(batch), name="fetch")
            failure: BaseException | None = None
            try:
                await self._until_done(fetching, background)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                await self._drain(batch, background, failure)
        finally:
            await self._close(background)
        return self.summary

    async def _close(self, background: list[asyncio.Task[None]]) -> None:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self._deliverer is not None:
            # Whatever finished but was not spooled yet goes to disk before exit.
            await self._deliverer.persist()
            self.summary.undelivered = self._deliverer.undelivered_results()
            self._deliverer.close()
            if self.summary.undelivered:
                logger.warning(
                    "%d result(s) not delivered yet; kept in %s for the next start",
                    self.summary.undelivered,
                    self.config.resolved_spool_path(),
                )
        await self.client.aclose()
        if self._spool is not None:
            self._spool.close()

    async def _until_done(
        self, work: Awaitable[object], background: list[asyncio.Task[None]]
    ) -> None:
        """Await ``work``, unless a background loop fails first (a refused key)."""
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait([task, *background], return_when=asyncio.FIRST_COMPLETED)
        for finished in background:
            if finished in done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                finished.result()  # raises what ended it
                raise RuntimeError(f"the {finished.get_name()} loop ended unexpectedly")
        task.result()

    async def _fetch_loop(self, batch: bool) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        backoff = Backoff(config.backoff_initial, config.backoff_max)
        contacted = False
        while not self.stopping:
            free = self._room - len(self._jobs)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            self._slot_free.clear()
            if self._jobs and config.fetch_linger:
                free = await self._gather_slots(config.fetch_linger)
                if self.stopping:
                    return
                if free <= 0:  # the wanted buffer shrank meanwhile (the pace slowed)
                    continue
            # Room can exceed what one fetch may ask for (256 slots and their prefetch).
            asked = min(free, MAX_FETCH_JOBS)
            busy = bool(self._jobs)
            started = loop.time()
            try:
                leases = await self._fetch(asked, 0.0 if batch else config.fetch_wait)
            except ServerUnavailableError as exc:
                self.connectivity.failed(exc)
                if batch and (
                    not contacted or self.connectivity.outage_seconds() > config.batch_give_up
                ):
                    raise
                await self._pause(backoff.next_delay(exc.retry_after))
                continue
            if self.connectivity.down:
                self.connectivity.succeeded()
                if self._deliverer is not None:
                    self._deliverer.retry_now()
            contacted = True
            backoff.reset()
            if leases is None:  # stopped while waiting
                return
            if busy and len(leases) == asked:  # an idle node's long-poll is no round trip
                self._prefetch.round_trip(loop.time() - started)
            for lease in leases:
                self._start(lease)
            if leases:
                continue
            if batch:
                if not self._jobs:
                    return
                await self._slot_free.wait()  # a job ended: there may be more to claim
            elif loop.time() - started < MIN_EMPTY_FETCH_SECONDS:
                await self._pause(MIN_EMPTY_FETCH_SECONDS - (loop.time() - started))

    async def _gather_slots(self, linger: float) -> int:
        """Wait up to ``linger`` for half the room to be free; returns how much is.

        Only called while jobs are held: each fetch costs the node about as
        much CPU as a job's own bookkeeping, so a busy node asks for several
        jobs at once instead of one per finished job. The wait ends early
        once half the room (at least one lease) is free, or, with prefetch
        on, as soon as the leases waiting for a slot would run out before a
        fetch could bring more.
        """
        loop = asyncio.get_running_loop()
        enough = max(1, self._room // 2)
        deadline = loop.time() + linger
        while not self.stopping and self._jobs:
            free = self._room - len(self._jobs)
            remaining = deadline - loop.time()
            if free >= enough or remaining <= 0 or self._running_low():
                break
            self._slot_free.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._slot_free.wait(), remaining)
        return self._room - len(self._jobs)

    def _running_low(self) -> bool:
        """With prefetch on: the leases waiting for a slot would run out during a fetch."""
        return self._prefetch.fetch_now(len(self._jobs) - len(self._calling))

    async def _fetch(self, max_jobs: int, wait: float) -> list[Lease] | None:
        """One fetch, abandoned (None) if the node is stopped meanwhile."""
        call = asyncio.ensure_future(self.client.fetch(self._models, max_jobs, wait))
        stopped = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([call, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not call.done():
            # Leases the server hands out in this instant expire and requeue.
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            return None
        try:
            return call.result()
        except ServerRequestError as exc:
            raise ServerRequestError(
                f"{exc} (check node_id and models in the node config)", exc.status_code
            ) from exc

    async def _pause(self, seconds: float) -> None:
        """Sleep, cut short by :meth:`stop`."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- jobs ------------------------------------------------------------

    def _start(self, lease: Lease) -> None:
        previous = self._jobs.get(lease.job_id)
        if previous is not None:  # leased to us again: the old lease is over
            self._abort_reasons[lease.job_id] = "superseded by a new lease"
            previous.cancel()
        task = asyncio.create_task(self._work(lease), name=f"job {lease.job_id}")
        self._held[lease.job_id] = lease
        self._jobs[lease.job_id] = task
        task.add_done_callback(self._job_done)
        if self._heartbeater is not None:
            self._heartbeater.wake()

    def _job_done(self, task: asyncio.Task[None]) -> None:
        job_id = task.get_name().removeprefix("job ")
        if self._jobs.get(job_id) is task:
            del self._jobs[job_id]
        self._prefetch.job_ended()
        self._slot_free.set()

    async def _work(self, lease: Lease) -> None:
        loop = asyncio.get_running_loop()
        started: float | None = None
        outcome: Outcome
        try:
            async with self._slots:  # a prefetched lease waits here for a slot
                started = loop.time()
                task = asyncio.current_task()
                assert task is not None
                self._calling.add(task)
                try:
                    outcome = await self._outcome(lease)
                finally:
                    self._calling.discard(task)
        except asyncio.CancelledError:
            reason = self._abort_reasons.pop(lease.job_id, "shutdown")
            if started is None:
                logger.debug("job %s: handed back before it started (%s)", lease.job_id, reason)
                raise
            self.summary.aborted += 1
            logger.info(
                "job %s model=%s attempt=%d %.2fs aborted (%s)",
                lease.job_id,
                lease.model,
                lease.attempt,
                loop.time() - started,
                reason,
            )
            raise
        assert self._deliverer is not None
        # The slot is free now; the job's line is logged once its outcome is
        # durable (acknowledged by the server, or on disk).
        durable = self._deliverer.put(outcome)
        seconds = loop.time() - started
        durable.add_done_callback(lambda _: self._log_job(lease, outcome, seconds))

    async def _outcome(self, lease: Lease) -> Outcome:
        """Run the job's LLM call; whatever happens becomes the outcome to deliver."""
        model = self.config.model_for(lease.model)
        try:
            if model is None:
                raise InferenceError(
                    NodeError(
                        message=(
                            f"model {lease.model!r} is not configured on node "
                            f"{self.config.node_id!r}"
                        ),
                        type="model_not_served",
                        retryable=False,
                    )
                )
            result = await self.inference.complete(model, lease.model, lease.request, lease.job_id)
        except InferenceError as exc:
            return self._failed(lease, exc.error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not cost the job: let it be retried
            logger.exception("job %s: unexpected error", lease.job_id)
            error = NodeError(
                message=f"node error: {exc}"[:1000], type="node_error", retryable=True
            )
            return self._failed(lease, error)
        self.summary.completed += 1
        return ResultOutcome(job_id=lease.job_id, lease_token=lease.lease_token, result=result)

    def _log_job(self, lease: Lease, outcome: Outcome, seconds: float) -> None:
        if isinstance(outcome, ResultOutcome):
            usage = outcome.result.usage
            logger.info(
                "job %s model=%s attempt=%d %.2fs tokens=%d+%d completed",
                lease.job_id,
                lease.model,
                lease.attempt,
                seconds,
                usage.prompt_tokens if usage else 0,
                usage.completion_tokens if usage else 0,
            )
        elif isinstance(outcome, ErrorOutcome):
            error = outcome.error
            logger.warning(
                "job %s model=%s attempt=%d %.2fs failed (%s, %s): %s",
                lease.job_id,
                lease.model,
                lease.attempt,
                seconds,
                error.type,
                "retryable" if error.retryable else "permanent",
                error.message,
            )

    def _failed(self, lease: Lease, error: NodeError) -> ErrorOutcome:
        self.summary.failed += 1
        return ErrorOutcome(job_id=lease.job_id, lease_token=lease.lease_token, error=error)

    # -- what the other loops tell us ------------------------------------

    def _jobs_in_flight(self) -> bool:
        """True while a job is still working (its outcome could join the next submit)."""
        return bool(self._calling)

    def _lease_refs(self) -> list[LeaseRef]:
        return [
            LeaseRef(job_id=lease.job_id, lease_token=lease.lease_token)
            for lease in self._held.values()
        ]

    def _lease_seconds(self) -> float | None:
        if not self._held:
            return None
        return float(min(lease.lease_seconds for lease in self._held.values()))

    def _gone(self, job_ids: Sequence[str], reason: str) -> None:
        """The server says these leases are over: abort their jobs."""
        for job_id in job_ids:
            self._held.pop(job_id, None)
            task = self._jobs.get(job_id)
            if task is not None and not task.done():
                logger.warning("job %s: %s by the server, aborting it", job_id, reason)
                self._abort_reasons[job_id] = reason
                task.cancel()

    def _settled(self, acks: Sequence[SubmitAck]) -> None:
        for ack in acks:
            if ack.job_id not in self._jobs:
                self._held.pop(ack.job_id, None)
            self.summary.acks[ack.ack] = self.summary.acks.get(ack.ack, 0) + 1

    # -- shutdown --------------------------------------------------------

    async def _drain(
        self, batch: bool, background: list[asyncio.Task[None]], failure: BaseException | None
    ) -> None:
        """Let running jobs finish (within the grace period), release the rest, deliver."""
        self.stop()
        # A refused key: nothing will be accepted, so there is nothing to wait for.
        broken = isinstance(failure, KeyRejectedError) or any(t.done() for t in background)
        # `batch` gave up on an unreachable server: finish and spool, do not wait to deliver.
        unreachable = isinstance(failure, ServerUnavailableError)
        # Prefetched leases that never got a slot go back at once: starting
        # them now would only hold the shutdown up.
        unstarted = self._abort(
            [job_id for job_id, task in self._jobs.items() if task not in self._calling]
        )
        await asyncio.gather(*unstarted.values(), return_exceptions=True)
        running = list(self._jobs.values())
        if running and not broken and self.config.shutdown_grace > 0:
            logger.info(
                "waiting up to %.0f s for %d running job(s) to finish",
                self.config.shutdown_grace,
                len(running),
            )
            await asyncio.wait(running, timeout=self.config.shutdown_grace)
        leftover = self._abort(list(self._jobs))
        await asyncio.gather(*leftover.values(), return_exceptions=True)
        assert self._deliverer is not None
        for job_id in [*unstarted, *leftover]:
            lease = self._held.get(job_id)
            if lease is not None:
                self._deliverer.put(
                    ReleaseOutcome(job_id=lease.job_id, lease_token=lease.lease_token)
                )
                self.summary.released += 1
        if broken or unreachable:
            return
        if not batch:
            grace = min(SHUTDOWN_DELIVERY_SECONDS, self.config.shutdown_grace)
            await self._deliverer.wait_idle(max(SHUTDOWN_DELIVERY_MIN_SECONDS, grace))
            return
        # batch: keep trying while the server is up or has been down only briefly.
        while not await self._deliverer.wait_idle(1.0):
            if any(task.done() for task in background):
                return
            if self.connectivity.outage_seconds() > self.config.batch_give_up:
                return

    def _abort(self, job_ids: list[str]) -> dict[str, asyncio.Task[None]]:
        """Cancel these jobs' tasks for the shutdown; returns the ones still going."""
        aborted: dict[str, asyncio.Task[None]] = {}
        for job_id in job_ids:
            task = self._jobs.get(job_id)
            if task is not None and not task.done():
                self._abort_reasons.setdefault(job_id, "shutdown")
                task.cancel()
                aborted[job_id] = task
        return aborted

    def _log_start(self, batch: bool) -> None:
        served = ", ".join(
            f"{m.name} ({m.litellm_model}{' @ ' + m.api_base if m.api_base else ''})"
            for m in self.config.models
        )
        logger.info(
            "node %s %s for %s; concurrency %d, prefetch up to %d; serving %s",
            self.config.node_id,
            "draining the queue" if batch else "working",
            self.config.server_url,
            self.config.concurrency,
            self._prefetch.limit,
            served,
        )
