"""Running the jobs a node holds: one task per lease, a slot, the LLM call, its outcome.

A lease is held from the fetch that brought it until the server has
acknowledged its outcome or said the lease is over. Its job runs as one
task, which first waits for one of the ``concurrency`` slots (a prefetched
lease waits there), then makes the LLM call through
:mod:`~openbeepboop_node.inference` on the job's resolved
:class:`~openbeepboop_node.model_routes.ModelRoute`. Whatever happens becomes
the outcome to deliver: a result, or an error the queue records (retryable
or not). A call that got no connection to the backend is not the job's
failure: the lease is released (no attempt counted) and the model paused
(:mod:`~openbeepboop_node.backend_health`); leases of a paused model that
have not started are released without a call. The slot is free as soon as
the call returns; the job's log line is written, and the job counted, once
the outcome is durable (acknowledged, or on disk), as the outcome the server
gets: a result the server refused (too large, not a chat completion it
reads) is logged and counted as the failure delivered in its place, and an
outcome the server acknowledged without keeping it (``stale``,
``rejected``) as "not kept", neither completed nor failed. Outcomes an
earlier run left in the spool are logged and counted by the run that
delivers them, once the server has answered them, their lines saying they
came from the spool.

Per-model ``concurrency`` is counted here: :attr:`JobRunner.held` is how
many leases each capped entry holds, running or waiting for a slot; the
fetcher asks for an entry only while that is below its cap.

The heartbeat loop and the lease watch read the held leases from here and
report the ones the server took back or cancelled (their tasks are cancelled,
which aborts their LLM calls and frees their slots); the delivery loop
reports acknowledgements.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from openbeepboop_schemas import (
    ErrorOutcome,
    Lease,
    LeaseRef,
    NodeError,
    Outcome,
    ReleaseOutcome,
    ResultOutcome,
    SubmitAck,
)

from openbeepboop_node.backend_health import BackendHealth
from openbeepboop_node.delivery import Deliverer, NotKept
from openbeepboop_node.exceptions import BackendUnreachableError, InferenceError
from openbeepboop_node.heartbeat import Heartbeater
from openbeepboop_node.inference import Inference
from openbeepboop_node.lease_watch import LeaseWatcher
from openbeepboop_node.model_routes import ModelRoutes
from openbeepboop_node.prefetch import PrefetchSizer
from openbeepboop_node.public_errors import public_message

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What one ``run`` or ``run_batch`` did."""

    completed: int = 0
    failed: int = 0
    #: Results and errors the server acknowledged without keeping them (``stale``,
    #: ``rejected``): counted neither completed nor failed.
    not_kept: int = 0
    aborted: int = 0
    #: Leases handed back that the server took back (acknowledged releases).
    released: int = 0
    #: Of ``released``: handed back because their model's backend was unreachable.
    backend_released: int = 0
    #: Results and errors not delivered when the run ended (kept in the spool).
    undelivered: int = 0
    #: Releases not delivered when the run ended: their jobs wait for the leases to expire.
    undelivered_releases: int = 0
    #: Model entries still paused (backend unreachable) when the run ended.
    backends_down: list[str] = field(default_factory=list)
    acks: dict[str, int] = field(default_factory=dict)


class JobRunner:
    """The leases a node holds and their jobs' tasks."""

    def __init__(
        self,
        *,
        node_id: str,
        concurrency: int,
        routes: ModelRoutes,
        inference: Inference,
        prefetch: PrefetchSizer,
        slot_free: asyncio.Event,
        summary: RunSummary,
        health: BackendHealth,
        caps: Mapping[str, int] | None = None,
    ) -> None:
        self._node_id = node_id
        self._routes = routes
        self._health = health
        self._caps = dict(caps or {})
        self._inference = inference
        self._prefetch = prefetch
        self._slot_free = slot_free
        self._slots = asyncio.Semaphore(concurrency)
        self.summary = summary
        #: Where outcomes go; set once the delivery loop exists (it asks this runner too).
        self.deliverer: Deliverer | None = None
        #: Set once the heartbeat loop exists: a new lease starts its clock.
        self.heartbeater: Heartbeater | None = None
        #: Set once the lease watch exists: a new lease joins it.
        self.lease_watcher: LeaseWatcher | None = None
        #: Every held lease whose outcome the server has not acknowledged.
        self.leases: dict[str, Lease] = {}
        #: Every held job's task: running, or waiting for a slot (prefetched).
        self.tasks: dict[str, asyncio.Task[None]] = {}
        #: The tasks that hold a slot (their LLM call may be in flight). Tasks,
        #: not job ids: a job leased again runs as a new task beside the old one
        #: for a moment.
        self.calling: set[asyncio.Task[None]] = set()
        #: The tasks whose request is still being prepared: started and about
        #: to take a slot, or holding one with LiteLLM building the request
        #: (not yet sent to the backend). A fetch that would only bring leases
        #: to wait for a slot waits for these first (:mod:`.fetching`); the
        #: fetch loop's wake-up (``slot_free``) is set when the last one is sent.
        self.preparing: set[asyncio.Task[None]] = set()
        #: Why a job's task was cancelled, for its log line ("shutdown" if unset).
        self.abort_reasons: dict[str, str] = {}
        #: When each held lease expires at the server, as far as the node knows
        #: (loop time: its fetch or last extending heartbeat plus the lease period).
        self.expiry: dict[str, float] = {}
        #: Leases held per capped ``[[models]]`` entry (running or waiting for a slot).
        self.held: dict[str, int] = dict.fromkeys(self._caps, 0)
        #: The capped entry each of those tasks is counted under.
        self._counted: dict[asyncio.Task[None], str] = {}

    # -- one job ---------------------------------------------------------

    def start(self, lease: Lease) -> None:
        """Start the job of a lease just fetched."""
        previous = self.tasks.get(lease.job_id)
        if previous is not None:  # leased to us again: the old lease is over
            self.abort_reasons[lease.job_id] = "superseded by a new lease"
            previous.cancel()
        self.leases[lease.job_id] = lease
        self.expiry[lease.job_id] = asyncio.get_running_loop().time() + lease.lease_seconds
        entry = self._entry(lease)
        if entry is not None and self._health.is_paused(entry):
            # Fetched by a long-poll that began before the pause: straight back.
            self._hand_back(lease)
            return
        task = asyncio.create_task(self._work(lease), name=f"job {lease.job_id}")
        self.tasks[lease.job_id] = task
        self.preparing.add(task)
        if entry in self._caps:
            assert entry is not None
            self.held[entry] += 1
            self._counted[task] = entry
        task.add_done_callback(self._job_done)
        if self.heartbeater is not None:
            self.heartbeater.wake()
        if self.lease_watcher is not None:
            self.lease_watcher.wake()

    def refuse(self, outcome: ErrorOutcome | ReleaseOutcome) -> None:
        """Hand back a lease the node could not read, or one beyond what it asked for.

        (:mod:`~openbeepboop_node.fetch_answer`.) It never becomes a task: its
        error outcome, or its release, goes straight to delivery.
        """
        assert self.deliverer is not None
        if isinstance(outcome, ReleaseOutcome):
            self.deliverer.put(outcome, partial(self._released, False))
        else:
            self.summary.failed += 1
            self.deliverer.put(outcome)

    def release(self, lease: Lease, *, backend: bool = False) -> ReleaseOutcome:
        """Hand ``lease`` back unworked: the server requeues its job, no attempt counted.

        Counted as released once the server has acknowledged it (``backend``:
        as handed back because the model's backend was unreachable too).
        """
        release = ReleaseOutcome(job_id=lease.job_id, lease_token=lease.lease_token)
        assert self.deliverer is not None
        self.deliverer.put(release, partial(self._released, backend))
        return release

    def _released(self, backend: bool, told: Outcome | NotKept) -> None:
        """The server answered a release: count it if it took the lease back."""
        if isinstance(told, NotKept):
            logger.warning(
                "job %s: server ignored the release (%s)", told.outcome.job_id, told.reason()
            )
            return
        self.summary.released += 1
        if backend:
            self.summary.backend_released += 1

    def release_expiry(self, releases: Sequence[ReleaseOutcome]) -> list[float]:
        """Seconds until each of these released leases expires at the server, where known."""
        now = asyncio.get_running_loop().time()
        return [
            max(0.0, self.expiry[release.job_id] - now)
            for release in releases
            if release.job_id in self.expiry
        ]

    def extended(self, job_ids: Sequence[str], lease_seconds: float) -> None:
        """A heartbeat extended these leases by ``lease_seconds`` from now."""
        until = asyncio.get_running_loop().time() + lease_seconds
        for job_id in job_ids:
            if job_id in self.expiry:
                self.expiry[job_id] = until

    def _entry(self, lease: Lease) -> str | None:
        route = self._routes.route_for(lease.model)
        return route.entry if route is not None else None

    def _job_done(self, task: asyncio.Task[None]) -> None:
        job_id = task.get_name().removeprefix("job ")
        if self.tasks.get(job_id) is task:
            del self.tasks[job_id]
        if self._counted:
            entry = self._counted.pop(task, None)
            if entry is not None:
                self.held[entry] -= 1
        self.preparing.discard(task)  # one cancelled before it ever ran
        self._prefetch.job_ended()
        self._slot_free.set()

    def _hand_back(self, lease: Lease) -> ReleaseOutcome:
        """Release a lease of a paused model: requeued at once, no attempt counted."""
        logger.debug(
            "job %s model=%s: handed back, its backend is unreachable", lease.job_id, lease.model
        )
        return self.release(lease, backend=True)

    def paused(self, entry: str) -> None:
        """``entry`` was just paused: hand back its leases still waiting for a slot."""
        for job_id, task in list(self.tasks.items()):
            lease = self.leases.get(job_id)
            if task in self.calling or task.done() or lease is None:
                continue
            if self._entry(lease) == entry:
                self.abort_reasons[job_id] = "its backend is unreachable"
                task.cancel()
                self._hand_back(lease)

    async def _work(self, lease: Lease) -> None:
        loop = asyncio.get_running_loop()
        started: float | None = None
        outcome: Outcome
        task = asyncio.current_task()
        assert task is not None
        try:
            if self._slots.locked():  # a prefetched lease: it prepares nothing while it waits
                self._prepared(task)
            async with self._slots:  # a prefetched lease waits here for a slot
                started = loop.time()
                self.calling.add(task)
                self.preparing.add(task)
                try:
                    outcome = await self._outcome(lease, partial(self._prepared, task))
                finally:
                    self._prepared(task)
                    self.calling.discard(task)
        except asyncio.CancelledError:
            reason = self.abort_reasons.pop(lease.job_id, "shutdown")
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
        assert self.deliverer is not None
        if isinstance(outcome, ReleaseOutcome):
            return  # already handed to the deliverer
        # The slot is free now; the job's line is logged, and counted, once its
        # outcome is durable (acknowledged by the server, or on disk), as what
        # the server will get: a result it refuses is the failure delivered
        # instead.
        self.deliverer.put(outcome, self._job_line(lease, loop.time() - started))

    def _prepared(self, task: asyncio.Task[None]) -> None:
        """The job's request has gone to its backend (or its call ended, or it waits for a slot)."""
        if task in self.preparing:
            self.preparing.discard(task)
            if not self.preparing:
                self._slot_free.set()

    async def _outcome(self, lease: Lease, sent: Callable[[], None]) -> Outcome:
        """Run the job's LLM call; whatever happens becomes the outcome to deliver.

        ``sent`` is called once the request is on its way to the backend.
        """
        route = self._routes.route_for(lease.model)
        try:
            if route is None:
                raise InferenceError(
                    NodeError(
                        message=(
                            f"model {lease.model!r} is not configured on node {self._node_id!r}"
                        ),
                        type="model_not_served",
                        retryable=False,
                    )
                )
            if self._health.is_paused(route.entry):
                return self._hand_back(lease)
            result = await self._inference.complete(
                route, lease.request, lease.job_id, on_sent=sent
            )
        except BackendUnreachableError as exc:
            assert route is not None
            self._health.pause(route.entry, str(exc))
            return self._hand_back(lease)
        except InferenceError as exc:
            if route is not None:  # the backend was reached: it is there
                self._health.answered(route.entry)
            return self._failed(lease, exc.error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not cost the job: let it be retried
            logger.exception("job %s: unexpected error", lease.job_id)
            # The detail (traceback, paths) stays in this log; the user gets the gist.
            error = NodeError(
                message=public_message(f"node error: {type(exc).__name__}: {exc}")[:1000],
                type="node_error",
                retryable=True,
            )
            return self._failed(lease, error)
        self._health.answered(route.entry)
        return ResultOutcome(job_id=lease.job_id, lease_token=lease.lease_token, result=result)

    def _job_line(self, lease: Lease, seconds: float) -> Callable[[Outcome | NotKept], None]:
        """What logs and counts the job once the deliverer says its outcome is durable.

        Told again when the server refused a result already on disk, or did
        not keep an outcome already on disk: the job's first line is then
        followed by one saying what became of it, and the counts move the
        job from the first to the second (completed to failed, or to not
        kept).
        """
        told: list[Outcome | NotKept] = []
        head = "job %s model=%s attempt=%d %.2fs"
        args = (lease.job_id, lease.model, lease.attempt, seconds)

        def tell(outcome: Outcome | NotKept) -> None:
            if told:
                self._count(told[-1], -1)
            told.append(outcome)
            self._count(outcome, 1)
            _log_outcome(head, args, outcome)

        return tell

    def from_spool(self, outcome: Outcome | NotKept) -> None:
        """Log and count an outcome an earlier run left in the spool, now the server answered it."""
        self._count(outcome, 1)
        job_id = (outcome.outcome if isinstance(outcome, NotKept) else outcome).job_id
        _log_outcome("job %s (from the spool)", (job_id,), outcome)

    def _count(self, outcome: Outcome | NotKept, step: int) -> None:
        if isinstance(outcome, NotKept):
            if not isinstance(outcome.outcome, ReleaseOutcome):  # a release too late: no count
                self.summary.not_kept += step
        elif isinstance(outcome, ReleaseOutcome):
            self.summary.released += step
        elif isinstance(outcome, ResultOutcome):
            self.summary.completed += step
        elif isinstance(outcome, ErrorOutcome):
            self.summary.failed += step

    def _failed(self, lease: Lease, error: NodeError) -> ErrorOutcome:
        return ErrorOutcome(job_id=lease.job_id, lease_token=lease.lease_token, error=error)

    # -- what the heartbeat and delivery loops ask and tell --------------

    def in_flight(self) -> bool:
        """True while a job is still working (its outcome could join the next submit)."""
        return bool(self.calling)

    def lease_refs(self) -> list[LeaseRef]:
        """The held leases, as the heartbeat names them."""
        return [
            LeaseRef(job_id=lease.job_id, lease_token=lease.lease_token)
            for lease in self.leases.values()
        ]

    def lease_seconds(self) -> float | None:
        """The shortest lease period among the held leases; None when none is held."""
        if not self.leases:
            return None
        return float(min(lease.lease_seconds for lease in self.leases.values()))

    def gone(self, job_ids: Sequence[str], reason: str) -> None:
        """The server says these leases are over: abort their jobs."""
        for job_id in job_ids:
            self.leases.pop(job_id, None)
            self.expiry.pop(job_id, None)
            task = self.tasks.get(job_id)
            if task is not None and not task.done():
                logger.warning("job %s: %s by the server, aborting it", job_id, reason)
                self.abort_reasons[job_id] = reason
                task.cancel()

    def settled(self, acks: Sequence[SubmitAck]) -> None:
        """The server acknowledged these outcomes: their leases are no longer held."""
        for ack in acks:
            if ack.job_id not in self.tasks:
                self.leases.pop(ack.job_id, None)
                self.expiry.pop(ack.job_id, None)
            self.summary.acks[ack.ack] = self.summary.acks.get(ack.ack, 0) + 1

    def abort(self, job_ids: list[str]) -> dict[str, asyncio.Task[None]]:
        """Cancel these jobs' tasks for the shutdown; returns the ones still going."""
        aborted: dict[str, asyncio.Task[None]] = {}
        for job_id in job_ids:
            task = self.tasks.get(job_id)
            if task is not None and not task.done():
                self.abort_reasons.setdefault(job_id, "shutdown")
                task.cancel()
                aborted[job_id] = task
        return aborted


def _log_outcome(head: str, args: tuple[object, ...], told: Outcome | NotKept) -> None:
    """The job's line: ``head % args`` (the job, and what is known of its run), then its end."""
    outcome = told.outcome if isinstance(told, NotKept) else told
    if isinstance(outcome, ResultOutcome):
        usage = outcome.result.usage
        tokens = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        if isinstance(told, NotKept):
            logger.warning(head + " tokens=%d+%d not kept (%s)", *args, *tokens, told.reason())
        else:
            logger.info(head + " tokens=%d+%d completed", *args, *tokens)
    elif isinstance(outcome, ReleaseOutcome):
        if isinstance(told, NotKept):
            logger.info(head + " release not needed (%s)", *args, told.reason())
        else:
            logger.info(head + " released (requeued, no attempt counted)", *args)
    elif isinstance(outcome, ErrorOutcome):
        error = outcome.error
        logger.warning(
            head + " failed (%s, %s)%s: %s",
            *args,
            error.type,
            "retryable" if error.retryable else "permanent",
            f", not kept ({told.reason()})" if isinstance(told, NotKept) else "",
            error.message,
        )
