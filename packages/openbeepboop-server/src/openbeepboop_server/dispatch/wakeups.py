"""In-process wake-ups for long-polls: a waiting node or client learns of a change at once.

Two kinds of waiter exist. A *fetch* waiter is a node long-polling for jobs of
some models; it is woken when jobs it could claim appear (submit, requeue,
lease expiry). A *watch* waiter is a client long-polling on job ids; it is
woken when one of those jobs may have become terminal. A *lease watch* is a
node long-polling on the leases it holds; it is woken like a watch waiter
(terminal jobs, which include cancelled ones) and also when a lease expires,
and is kept apart from the polls: a delivery hands it no result to read
(:mod:`openbeepboop_server.dispatch.lease_watch`). A wake-up is only a
hint to look again: the waiter re-reads the database, so a spurious wake-up
costs one query and a missed one (another replica changed the row) is caught
by the process's one periodic re-check for all parked long-polls
(:mod:`openbeepboop_server.dispatch.recheck`), which asks the database about
everything watched here at once and wakes only the waiters it concerns.

Waiters register *before* they first look at the database, so a change that
lands between the look and the wait is never lost: it marks the waiter woken
and the wait returns at once. Everything here runs on the event loop thread;
nothing blocks and nothing polls.

A single submit can also *hand* its job straight to a fetch waiter that is
parked (asleep in its long-poll): :meth:`Wakeups.reserve` picks the waiter,
the submit's own transaction claims for it, and :meth:`FetchWaiter.hand`
passes the leases over. That saves the waiter a transaction of its own and a
trip through the event loop between the submit's commit and the node's
answer (:mod:`openbeepboop_server.dispatch.handoff`; docs/server-internals.md,
"Hand-off: a submit claims for a parked node"). A reserved waiter that
wakes for another reason waits for the hand-off to settle before it does
anything else, so a job is never claimed for a waiter that is not looking.

Fetch waiters are indexed by the models they declare, and the parked ones
are counted per model as they park: a submit looks only at the waiters that
serve its model, and the re-check's demand costs the distinct models parked,
never fetches x declared models (a key's hundreds of fetches declaring 256
names each once made every submit wait seconds; docs/server.md, "Request budgets and caps").

Every waiter is also filed under the API key that made its request, so the
periodic re-check can ask the database about the distinct keys waiting (one
read, whatever the number of waiters) and end the long-polls of a key that
was revoked or expired meanwhile (:meth:`Wakeups.keys_refused`): they answer
``401`` like a new request with that key, and take nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from openbeepboop_schemas import ANY_MODEL

from openbeepboop_server.queue.views import may_see


def _end_sleep(sleeping: asyncio.Future[None]) -> None:
    if not sleeping.done():
        sleeping.set_result(None)


class Waiter:
    """One long-poll in progress; ``wait`` returns when it is woken or the timeout passes.

    A wake-up resolves the sleeping wait's own future, so the long-poll runs
    in the loop's very next turn. (``asyncio.wait_for`` on an ``Event`` took
    three turns: the event's task, the timeout wrapper, then the request, and
    whatever else was ready ran in between.)
    """

    __slots__ = (
        "_sleeping",
        "_woken",
        "closed",
        "disconnected",
        "key_id",
        "refused",
        "results",
        "viewer",
    )

    def __init__(self, viewer: Any = None, key_id: int | None = None) -> None:
        self._woken = False
        #: The futures of the waits in progress (one per request, in practice).
        self._sleeping: set[asyncio.Future[None]] = set()
        #: The client went away: stop waiting and do no more work for it.
        self.disconnected = False
        #: The server is shutting down: answer with what there is.
        self.closed = False
        #: The API key behind the request (None: not filed under a key).
        self.key_id = key_id
        #: That key was revoked or expired: answer ``401`` and hand over nothing.
        self.refused = False
        #: Who is watching (a :class:`~openbeepboop_server.keys.Caller`); None: nobody to
        #: hand results to.
        self.viewer = viewer
        #: Poll entries handed over by the delivery that finished them, by job id.
        self.results: dict[str, Any] = {}

    @property
    def woken(self) -> bool:
        """True when a wake-up arrived since the last :meth:`clear`."""
        return self._woken

    @property
    def done(self) -> bool:
        """True when waiting any longer is pointless (client gone, server stopping, key
        refused)."""
        return self.disconnected or self.closed or self.refused

    def wake(self) -> None:
        """Make the current or next :meth:`wait` return."""
        self._woken = True
        for sleeping in self._sleeping:
            _end_sleep(sleeping)

    def clear(self) -> None:
        """Forget past wake-ups; call right before re-reading the database."""
        self._woken = False

    def disconnect(self) -> None:
        """The client hung up."""
        self.disconnected = True
        self.wake()

    def refuse(self) -> None:
        """The request's key was revoked or expired."""
        self.refused = True
        self.wake()

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True if woken rather than timed out."""
        if self._woken:
            return True
        if timeout <= 0:
            return False
        loop = asyncio.get_running_loop()
        sleeping: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(timeout, _end_sleep, sleeping)
        self._sleeping.add(sleeping)
        try:
            await sleeping
        finally:
            timer.cancel()
            self._sleeping.discard(sleeping)
        return self._woken


class FetchWaiter(Waiter):
    """A node waiting for jobs of ``models`` (``"*"`` = any model).

    ``claimant`` is what a submit needs to claim on the waiter's behalf (a
    fetch long-poll stores its caller and fetch request); a waiter without one
    is never reserved.
    """

    __slots__ = (
        "_handoff",
        "_parked",
        "_parked_models",
        "_taken",
        "any_model",
        "claimant",
        "left",
        "models",
        "node_id",
        "seq",
    )

    def __init__(
        self,
        models: Iterable[str],
        claimant: Any = None,
        node_id: str | None = None,
        *,
        key_id: int | None = None,
        seq: int = 0,
        parked_models: Counter[str] | None = None,
    ) -> None:
        super().__init__(key_id=key_id)
        self.models = frozenset(models)
        #: The node behind the long-poll, whose registry row the re-check keeps fresh.
        self.node_id = node_id
        self.any_model = ANY_MODEL in self.models
        self.claimant = claimant
        #: Registration order: the lower, the longer it has waited.
        self.seq = seq
        self._parked = False
        # The registry's count of parked waiters per model, kept as this one parks.
        self._parked_models = parked_models
        #: Its long-poll is over; a hand-off can no longer reach it.
        self.left = False
        self._handoff: asyncio.Future[list[Any]] | None = None
        self._taken: asyncio.Future[bool] | None = None

    @property
    def parked(self) -> bool:
        """Asleep in its long-poll: nothing of its own is in flight."""
        return self._parked

    @parked.setter
    def parked(self, value: bool) -> None:
        if value == self._parked:
            return
        self._parked = value
        counts = self._parked_models
        if counts is None:
            return
        if value:
            counts.update(self.models)
            return
        counts.subtract(self.models)
        for model in self.models:
            if counts[model] <= 0:
                del counts[model]

    def serves(self, model: str) -> bool:
        """True if a job of ``model`` is claimable by this waiter."""
        return self.any_model or model in self.models

    def overlaps(self, other: FetchWaiter) -> bool:
        """True if a job this waiter could take might suit ``other`` as well."""
        return self.any_model or other.any_model or not self.models.isdisjoint(other.models)

    @property
    def reserved(self) -> bool:
        """True while a submit is claiming on this waiter's behalf (or its leases wait)."""
        return self._handoff is not None

    def hand(self, leases: list[Any]) -> bool:
        """Give the waiter what was claimed for it (``[]`` when nothing was).

        False if the waiter's long-poll ended meanwhile (cancelled): the
        caller then owns ``leases`` and must give them back to the queue.
        """
        handoff = self._handoff
        if handoff is None or handoff.done() or self.left:
            return False
        handoff.set_result(leases)
        return True

    async def taken(self) -> bool:
        """After :meth:`hand` returned True: wait until the waiter took the leases.

        True once it owns them (it answers with them, or gives them back if
        its node hung up); False if it left first, and the caller must give
        them back. Its answer is on its way when this returns: from taking
        the leases to sending them the waiter does not yield to the loop.
        """
        if self._taken is None:
            return False
        return await self._taken

    async def handed(self) -> list[Any]:
        """Wait for the submit that reserved this waiter; what it claimed for it."""
        if self._handoff is None:
            return []
        try:
            leases = await self._handoff
        finally:
            self._handoff = None
        if self._taken is not None and not self._taken.done():
            self._taken.set_result(True)
        if leases:
            # Answered: a wake-up still pending would only be passed on in vain.
            self.clear()
        return leases

    def _reserve(self) -> None:
        loop = asyncio.get_running_loop()
        self._handoff = loop.create_future()
        self._taken = loop.create_future()
        self.wake()

    def _leave(self) -> None:
        self.left = True
        if self._taken is not None and not self._taken.done():
            self._taken.set_result(False)


class Wakeups:
    """The registry of waiting long-polls of one app, and the notifications that wake them."""

    def __init__(self) -> None:
        # Insertion-ordered: the node that has waited longest is woken first.
        self._fetchers: dict[FetchWaiter, None] = {}
        # The same waiters by declared model (``*`` under its own name), each in
        # registration order: a submit looks only at those serving its model.
        self._by_model: dict[str, dict[FetchWaiter, None]] = {}
        # Parked fetch waiters per declared model (kept by the waiters as they park).
        self._parked_models: Counter[str] = Counter()
        self._seq = itertools.count()
        self._watchers: dict[str, set[Waiter]] = {}
        self._watching: dict[Waiter, tuple[str, ...]] = {}
        # Nodes' lease watches by job id, and the ids each one watches.
        self._lease_watchers: dict[str, set[Waiter]] = {}
        self._lease_watching: dict[Waiter, tuple[str, ...]] = {}
        # Every waiter filed under a key, by key id.
        self._by_key: dict[int, dict[Waiter, None]] = {}
        self._closed = False
        #: Bumped by every change that may have made jobs claimable (new or
        #: requeued jobs, here or on another replica, or news lost): a fetch
        #: that found nothing at one value has nothing new to find while it
        #: holds (:mod:`.empty_looks`).
        self.generation = 0

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (server shutting down)."""
        return self._closed

    @property
    def fetch_waiters(self) -> int:
        """How many fetch long-polls are waiting right now."""
        return len(self._fetchers)

    @property
    def parked_fetch_waiters(self) -> int:
        """How many fetch long-polls are asleep right now (a submit may hand them its job)."""
        return sum(1 for waiter in self._fetchers if waiter.parked)

    @property
    def watch_waiters(self) -> int:
        """How many poll long-polls are waiting right now."""
        return len(self._watching)

    @property
    def lease_watch_waiters(self) -> int:
        """How many nodes' lease watches are waiting right now."""
        return len(self._lease_watching)

    # -- registration -------------------------------------------------------

    @contextlib.contextmanager
    def _filed(self, waiter: Waiter) -> Iterator[None]:
        """Keep ``waiter`` under its key (if it has one) for the duration of the block."""
        key_id = waiter.key_id
        if key_id is None:
            yield
            return
        self._by_key.setdefault(key_id, {})[waiter] = None
        try:
            yield
        finally:
            group = self._by_key[key_id]
            del group[waiter]
            if not group:
                del self._by_key[key_id]

    @contextlib.contextmanager
    def fetching(
        self,
        models: Iterable[str],
        claimant: Any = None,
        node_id: str | None = None,
        *,
        key_id: int | None = None,
    ) -> Iterator[FetchWaiter]:
        """Register a fetch waiter (of the API key ``key_id``) for the duration of the block."""
        waiter = FetchWaiter(
            models,
            claimant,
            node_id,
            key_id=key_id,
            seq=next(self._seq),
            parked_models=self._parked_models,
        )
        waiter.closed = self._closed
        self._fetchers[waiter] = None
        for model in waiter.models:
            self._by_model.setdefault(model, {})[waiter] = None
        try:
            with self._filed(waiter):
                yield waiter
        finally:
            waiter._leave()
            waiter.parked = False
            del self._fetchers[waiter]
            for model in waiter.models:
                group = self._by_model[model]
                del group[waiter]
                if not group:
                    del self._by_model[model]
            if waiter.woken and not waiter.closed:
                # It was picked to take new jobs but leaves without claiming
                # (client gone, deadline): pass the turn on so the jobs do not
                # sit until the next periodic re-check.
                self._hand_on(waiter)

    @contextlib.contextmanager
    def watching(
        self, job_ids: Iterable[str], viewer: Any = None, *, key_id: int | None = None
    ) -> Iterator[Waiter]:
        """Register a waiter (of the API key ``key_id``) for changes to any of ``job_ids``
        for the duration of the block."""
        waiter = Waiter(viewer, key_id)
        waiter.closed = self._closed
        ids = tuple(dict.fromkeys(job_ids))
        self._watching[waiter] = ids
        for job_id in ids:
            self._watchers.setdefault(job_id, set()).add(waiter)
        try:
            with self._filed(waiter):
                yield waiter
        finally:
            self._unwatch(waiter, self._watching.pop(waiter))

    @contextlib.contextmanager
    def watching_leases(
        self, job_ids: Iterable[str], *, key_id: int | None = None
    ) -> Iterator[Waiter]:
        """Register a node's lease watch (of the API key ``key_id``) on ``job_ids`` for the
        duration of the block."""
        waiter = Waiter(key_id=key_id)
        waiter.closed = self._closed
        ids = tuple(dict.fromkeys(job_ids))
        self._lease_watching[waiter] = ids
        for job_id in ids:
            self._lease_watchers.setdefault(job_id, set()).add(waiter)
        try:
            with self._filed(waiter):
                yield waiter
        finally:
            _drop(self._lease_watchers, waiter, self._lease_watching.pop(waiter))

    def narrow_leases(self, waiter: Waiter, job_ids: Iterable[str]) -> None:
        """Keep a lease watch waiting only on ``job_ids`` (those still held and running).

        A lease the node has delivered cannot be cancelled any more; the
        periodic re-check would otherwise wake the watch every round for its
        finished job until the node next renews it.
        """
        previous = self._lease_watching.get(waiter)
        if previous is None:
            return
        keep = tuple(dict.fromkeys(job_ids))
        kept = set(keep)
        _drop(self._lease_watchers, waiter, [job_id for job_id in previous if job_id not in kept])
        self._lease_watching[waiter] = keep

    def narrow(self, waiter: Waiter, job_ids: Iterable[str]) -> None:
        """Keep ``waiter`` watching only ``job_ids`` (a subset of what it registered).

        A poll that has read its jobs waits only for those that were live:
        the terminal ones can no longer change, and watching them would let
        the periodic re-check wake the poll every second for nothing.
        """
        keep = tuple(dict.fromkeys(job_ids))
        previous = self._watching.get(waiter)
        if previous is None:
            return
        kept = set(keep)
        self._unwatch(waiter, [job_id for job_id in previous if job_id not in kept])
        self._watching[waiter] = keep

    def _unwatch(self, waiter: Waiter, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            group = self._watchers.get(job_id)
            if group is not None:
                group.discard(waiter)
                if not group:
                    del self._watchers[job_id]

    # -- what the periodic re-check asks about --------------------------------

    def watched_ids(self) -> list[str]:
        """Every job id some poll or lease watch is waiting on right now, each once."""
        if not self._lease_watchers:
            return list(self._watchers)
        return list(dict.fromkeys([*self._watchers, *self._lease_watchers]))

    def parked_demand(self) -> dict[str, int]:
        """Per model (``"*"`` for any), how many parked fetchers could take a job of it.

        Counted as fetchers park, so this costs the distinct models parked,
        not fetchers x models. A parked fetcher with a wake-up pending still
        counts: the re-check then reads a few rows more than it needs and
        wakes only fetchers not already woken.
        """
        return dict(self._parked_models)

    def waiting_keys(self) -> list[int]:
        """The API keys with a long-poll waiting right now, each once."""
        return list(self._by_key)

    def parked_nodes(self) -> list[str]:
        """The node ids of the fetchers waiting right now, each once."""
        return list(
            dict.fromkeys(waiter.node_id for waiter in self._fetchers if waiter.node_id is not None)
        )

    # -- notifications ------------------------------------------------------

    def jobs_available(self, models: Iterable[str]) -> None:
        """New claimable jobs of these models (one entry per job): wake as many fetchers.

        Only as many nodes as there are new jobs are woken, oldest waiter
        first, so a thousand idle nodes do not all race for one job.
        """
        budget: dict[str, int] = {}
        for model in models:
            budget[model] = budget.get(model, 0) + 1
        if not budget:
            return
        self.generation += 1
        for model, count in budget.items():
            for waiter in self._serving(model):
                if waiter.woken:
                    continue
                waiter.wake()
                count -= 1
                if not count:
                    break

    def reserve(self, model: str) -> FetchWaiter | None:
        """The longest-parked waiter that can take a job of ``model``, now reserved; or None.

        The caller must :meth:`FetchWaiter.hand` it the outcome, even on
        failure (``[]``), or the waiter sleeps until its deadline.
        """
        if self._closed:
            return None
        for waiter in self._serving(model):
            if (
                waiter.parked
                and waiter.claimant is not None
                and not (waiter.woken or waiter.reserved or waiter.done)
            ):
                waiter._reserve()
                return waiter
        return None

    def queue_changed(self) -> None:
        """Jobs were requeued or backoffs changed (models unknown): every fetcher looks again."""
        self.generation += 1
        for waiter in self._fetchers:
            waiter.wake()

    def news_lost(self) -> None:
        """Changes may have been missed (another replica's notices): no earlier look holds."""
        self.generation += 1

    def watched(self, job_ids: Iterable[str]) -> list[str]:
        """Those of ``job_ids`` some poll is waiting on right now."""
        return [job_id for job_id in dict.fromkeys(job_ids) if job_id in self._watchers]

    def hand_result(self, owner_key_id: int, entry: Any) -> None:
        """Give a finished job's poll entry to the waiters allowed to see it.

        Each watcher's caller is checked as a poll would check it (ADMIN, or
        the key that owns the job): a poll of several ids may watch a job it
        cannot see, and must still be told "not found" about it.
        """
        for waiter in self._watchers.get(entry.id, ()):
            if waiter.viewer is not None and may_see(waiter.viewer, owner_key_id):
                waiter.results[entry.id] = entry

    def jobs_changed(self, job_ids: Iterable[str]) -> None:
        """These jobs may have turned terminal (or lost their lease): wake their watchers."""
        for job_id in job_ids:
            for waiter in self._watchers.get(job_id, ()):
                waiter.wake()
            for waiter in self._lease_watchers.get(job_id, ()):
                waiter.wake()

    def keys_refused(self, key_ids: Iterable[int]) -> None:
        """These keys were revoked or expired: every long-poll of theirs ends now.

        Each one answers ``401`` and takes nothing more: a fetch claims
        nothing, and gives back what a submit handed it meanwhile.
        """
        for key_id in key_ids:
            for waiter in self._by_key.get(key_id, ()):
                waiter.refuse()

    def close(self) -> None:
        """Server shutting down: every long-poll answers now with what it has."""
        self._closed = True
        for fetcher in self._fetchers:
            fetcher.closed = True
            fetcher.wake()
        for watcher in self._watching:
            watcher.closed = True
            watcher.wake()
        for watcher in self._lease_watching:
            watcher.closed = True
            watcher.wake()

    def _serving(self, model: str) -> Iterator[FetchWaiter]:
        """The fetch waiters that can take a job of ``model``, longest-waiting first.

        Callers only wake or reserve what they get, which changes no registry,
        so the groups are walked in place.
        """
        named = self._by_model.get(model, {}) if model != ANY_MODEL else {}
        anything = self._by_model.get(ANY_MODEL, {})
        if not anything:
            return iter(named)
        if not named:
            return iter(anything)
        return heapq.merge(named, anything, key=_registered)

    def _hand_on(self, leaving: FetchWaiter) -> None:
        if leaving.any_model:
            candidates: Iterable[FetchWaiter] = self._fetchers
        else:
            candidates = heapq.merge(
                *(self._serving(model) for model in leaving.models), key=_registered
            )
        for waiter in candidates:
            if not waiter.woken and leaving.overlaps(waiter):
                waiter.wake()
                return


def _registered(waiter: FetchWaiter) -> int:
    return waiter.seq


def _drop(registry: dict[str, set[Waiter]], waiter: Waiter, job_ids: Iterable[str]) -> None:
    """Take ``waiter`` off ``registry`` for ``job_ids``, forgetting ids nobody watches."""
    for job_id in job_ids:
        group = registry.get(job_id)
        if group is not None:
            group.discard(waiter)
            if not group:
                del registry[job_id]
