"""Fetching: claiming leases for the room a node has, and pausing between fetches.

One long-poll asks for as many leases as the node has room for (one request,
many leases) and each starts as a job. Room is ``concurrency`` slots (LLM
calls at once) plus leases that wait in the node for a slot, so a slot that
frees starts its next job at once instead of after a fetch round trip; how
many wait is sized by :mod:`~openbeepboop_node.prefetch` (up to
``prefetch``). The loop asks again when a lease ends, not when a whole batch
is done: at once on an idle node or when the waiting leases would run out
before a fetch returns, otherwise after at most ``fetch_linger`` (so one
fetch brings several leases instead of one request per finished job;
docs/performance.md, "Fetch linger"). An
unreachable server is retried with backoff, by fetches that do not wait (so
the first answer after an outage comes at once, and the node says at once
that the server is back); an empty answer that came back sooner than a
long-poll would is followed by a pause.

What is asked for: the models whose backend is not paused
(:attr:`~openbeepboop_node.backend_health.BackendHealth.live`), and of those
with their own ``concurrency`` only the ones with room, never more leases
than the fullest of them has room for (one fetch cannot say how many of
each model it wants). A node without per-model limits asks for its live
list as it is, so its fetch costs what it did. A long-poll in flight is
abandoned when a paused model is live again, so its jobs are fetched at once.
``batch``, once nothing else is left but paused models, waits up to
``batch_backend_wait`` seconds in all for one of them to come back.

While results wait for a server that does not take them (a submit failed or
timed out, and none has been answered since:
:attr:`~openbeepboop_node.delivery.Deliverer.stalled`), nothing is fetched:
jobs held run on and their results join the others in the spool, but a node
that kept claiming jobs would only pile up more results it cannot hand back,
and hold jobs another node could deliver. ``batch`` waits for that at most
until the server has been unreachable ``batch_give_up`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence

from openbeepboop_schemas import MAX_FETCH_JOBS, Lease

from openbeepboop_node.backend_health import BackendHealth
from openbeepboop_node.backoff import Backoff, Connectivity
from openbeepboop_node.config import NodeConfig
from openbeepboop_node.delivery import Deliverer
from openbeepboop_node.exceptions import (
    NotAQueueServerError,
    ServerRequestError,
    ServerUnavailableError,
)
from openbeepboop_node.prefetch import PrefetchSizer
from openbeepboop_node.queue_client import QueueClient
from openbeepboop_node.running import JobRunner

#: A fetch that comes back empty sooner than this (a server that does not
#: long-poll) is followed by a pause, so an idle node never spins.
MIN_EMPTY_FETCH_SECONDS = 0.5


def models_to_ask(
    live: Sequence[str], caps: Mapping[str, int], held: Mapping[str, int]
) -> tuple[Sequence[str], int]:
    """The models a fetch names, and the most leases it may ask for, given the caps.

    ``live``: the models not paused; ``caps``: per-model ``concurrency``;
    ``held``: leases held per capped model. Without caps ``live`` is returned
    as it is (no list built per fetch).
    """
    if not caps:
        return live, MAX_FETCH_JOBS
    models: list[str] = []
    most = MAX_FETCH_JOBS
    for name in live:
        cap = caps.get(name)
        if cap is None:
            models.append(name)
            continue
        room = cap - held[name]
        if room > 0:
            models.append(name)
            most = min(most, room)
    return models, most


class Fetcher:
    """The fetch loop of one node: claims leases and hands them to its :class:`JobRunner`."""

    def __init__(
        self,
        config: NodeConfig,
        client: QueueClient,
        connectivity: Connectivity,
        *,
        health: BackendHealth,
        runner: JobRunner,
        deliverer: Deliverer,
        prefetch: PrefetchSizer,
        stopping: asyncio.Event,
        slot_free: asyncio.Event,
        interrupt: asyncio.Event,
    ) -> None:
        self._config = config
        self._client = client
        self._connectivity = connectivity
        self._health = health
        self._caps = config.model_caps()
        self._held = runner.held
        self._start = runner.start
        self._refuse = runner.refuse
        self._jobs = runner.tasks
        self._calling = runner.calling
        self._preparing = runner.preparing
        self._deliverer = deliverer
        self._prefetch = prefetch
        self._stopping = stopping
        self._slot_free = slot_free
        #: Set by the node's stop and when a paused model is live again: ends
        #: a long-poll in flight (and ``batch``'s wait for a backend).
        self._interrupt = interrupt
        #: ``batch``: seconds spent so far waiting for a paused backend.
        self._waited_for_backends = 0.0

    @property
    def _room(self) -> int:
        """Leases the node may hold now: its slots and the waiting leases it wants."""
        return self._config.concurrency + self._prefetch.target

    def asking(self) -> tuple[Sequence[str], int]:
        """The models to ask for now, and the most leases their own limits allow."""
        return models_to_ask(self._health.live, self._caps, self._held)

    async def run(self, batch: bool) -> None:
        """Fetch until stopped; with ``batch``, until the server has nothing left.

        With ``batch``, raises ServerUnavailableError when the server cannot
        be reached at first or stays unreachable beyond ``batch_give_up``.
        """
        config = self._config
        stopping = self._stopping
        loop = asyncio.get_running_loop()
        backoff = Backoff(config.backoff_initial, config.backoff_max)
        contacted = False
        while not stopping.is_set():
            if self._deliverer.stalled:
                if not await self._wait_for_delivery(batch):
                    return
                continue
            free = self._room - len(self._jobs)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            self._slot_free.clear()
            if self._jobs and config.fetch_linger:
                free = await self._gather_slots(config.fetch_linger)
                if stopping.is_set():
                    return
                if free <= 0:  # the wanted buffer shrank meanwhile (the pace slowed)
                    continue
            models, most = self.asking()
            if not models:  # every model paused, or at its own limit
                if batch and not self._jobs:
                    if await self._wait_for_backends():
                        continue
                    return
                await self._slot_free.wait()  # a job ended, or a backend is back
                continue
            # Room can exceed what one fetch may ask for (256 slots and their prefetch).
            asked = min(free, most)
            busy = bool(self._jobs)
            started = loop.time()
            self._interrupt.clear()
            if stopping.is_set():
                return
            # While the server is unreachable, a fetch asks without waiting: a
            # long-poll to a server just back would say so only when its wait
            # ends (25 s by default), and "reachable again" would come that late.
            wait = 0.0 if batch or self._connectivity.down else config.fetch_wait
            try:
                leases = await self._fetch(models, asked, wait)
            except ServerUnavailableError as exc:
                self._connectivity.failed(exc)
                if batch and (
                    not contacted or self._connectivity.outage_seconds() > config.batch_give_up
                ):
                    raise
                await self._pause(backoff.next_delay(exc.retry_after))
                continue
            if leases is None:  # stopped, or a paused model is back: ask again
                continue
            if self._connectivity.down:
                self._connectivity.succeeded()
                if not self._connectivity.down:  # over, not only deliveries failing
                    self._deliverer.retry_now()
            contacted = True
            backoff.reset()
            if busy and len(leases) == asked:  # an idle node's long-poll is no round trip
                self._prefetch.round_trip(loop.time() - started)
            for lease in leases:
                self._start(lease)
            if leases:
                continue
            if batch:
                if not self._jobs:
                    if await self._wait_for_backends():
                        continue
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
        fetch could bring more; but not while :meth:`_holding_prefetch`.
        """
        loop = asyncio.get_running_loop()
        enough = max(1, self._room // 2)
        deadline = loop.time() + linger
        while not self._stopping.is_set() and self._jobs:
            free = self._room - len(self._jobs)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if not self._holding_prefetch(linger) and (free >= enough or self._running_low()):
                break
            self._slot_free.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._slot_free.wait(), remaining)
        return self._room - len(self._jobs)

    def _holding_prefetch(self, linger: float) -> bool:
        """Should a fetch wait for the requests of the jobs just started to go out?

        Yes while every slot is taken (the fetch would only bring leases to
        wait for a slot), a job's request is still being prepared, and no
        job is expected to end within ``linger``, the longest the fetch is
        held (so a slot that frees meanwhile finds no lease waiting only by
        bad luck, as it could without the hold). LiteLLM builds a
        request in a worker thread, and the fetch's own request would take
        the interpreter from it: the job's call would go out a millisecond
        or more later, on the path of an idle node's every job
        (docs/performance.md, "Prefetch after the request"), while the
        lease the fetch brings waits for a slot that frees only once that
        call is answered.
        """
        return (
            bool(self._preparing)
            and len(self._jobs) >= self._config.concurrency
            and self._prefetch.ending_per_second * linger < 1
        )

    def _running_low(self) -> bool:
        """With prefetch on: the leases waiting for a slot would run out during a fetch."""
        return self._prefetch.fetch_now(len(self._jobs) - len(self._calling))

    async def _wait_for_delivery(self, batch: bool) -> bool:
        """Wait until the server takes results again; False if the node stopped first.

        ``batch``: also False once the server has been unreachable ``batch_give_up`` s.
        """
        limit = None
        if batch:
            limit = max(0.0, self._config.batch_give_up - self._connectivity.outage_seconds())
        flowing = asyncio.ensure_future(self._deliverer.wait_flowing())
        stopped = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait(
                [flowing, stopped], timeout=limit, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            flowing.cancel()
            stopped.cancel()
        return not self._deliverer.stalled and not self._stopping.is_set()

    async def _wait_for_backends(self) -> bool:
        """``batch`` with nothing else left: wait for a paused model to be live again.

        At most ``batch_backend_wait`` seconds in all, over the whole run;
        True if one came back (fetch again), False when ``batch`` should end.
        """
        budget = self._config.batch_backend_wait - self._waited_for_backends
        if not self._health.paused or budget <= 0 or self._stopping.is_set():
            return False
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._interrupt.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._interrupt.wait(), budget)
        self._waited_for_backends += loop.time() - started
        return self._interrupt.is_set() and not self._stopping.is_set()

    async def _fetch(self, models: Sequence[str], max_jobs: int, wait: float) -> list[Lease] | None:
        """One fetch, abandoned (None) if the node is stopped or a paused model comes back."""
        live = self._health.live
        # A model at its own limit is left out of the claim, not out of the
        # registry: /v1/models must keep listing it (docs/node.md, "Per-model concurrency").
        serves = None if models is live else live
        call = asyncio.ensure_future(
            self._client.fetch(models, max_jobs, wait, serves, refuse=self._refuse)
        )
        interrupted = asyncio.ensure_future(self._interrupt.wait())
        try:
            await asyncio.wait([call, interrupted], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            # Cancelled meanwhile (the node stopping, a refused key): the fetch is
            # not left running, nor its error unread at exit.
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            raise
        finally:
            interrupted.cancel()
        if not call.done():
            # Leases the server hands out in this instant expire and requeue.
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            return None
        try:
            return call.result()
        except NotAQueueServerError:
            raise  # its message names server_url, the setting to check
        except ServerRequestError as exc:
            raise ServerRequestError(
                f"{exc} (check node_id and models in the node config)", exc.status_code
            ) from exc

    async def _pause(self, seconds: float) -> None:
        """Sleep, cut short by the node's stop."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
