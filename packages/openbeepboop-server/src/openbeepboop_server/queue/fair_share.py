"""The claim order: priority levels, then fair share between owners, then age.

The rule (docs/api.md, "Claim order"):

1. **Level.** A job's level is its ``priority`` plus one per
   ``priority_aging_seconds`` it has waited, but never above the highest
   priority among the owners' next jobs of that model. Jobs of the highest
   level present go first. The cap is what keeps aging from reordering
   equals: when everybody submits at priority 0, every job is at level 0
   however long it waited, and only fair share decides. A job below the top
   is lifted toward it by waiting, so it is never starved for ever.
2. **Fair share.** Within a level, the owner (the API key that submitted) with
   the smallest virtual time goes next (stride scheduling): each claim adds
   ``1 / weight`` to its owner's virtual time, so owners of weights 3 and 1
   get three claims to one. Ties go to the owner whose next job ranks first.
   A claim over one model keeps the virtual times of that model; a claim
   over several (a ``*`` node, or a node declaring several) keeps one per
   owner across them (:data:`POOLED`), so an owner's turns are its own
   whatever model names its jobs carry: spreading jobs over 50 models earns
   no more turns than queueing them under one.
3. **Within an owner:** by ``claim_rank`` (``created_at - priority * aging``,
   fixed at submit: a higher priority, or an older job, first), then ``seq``.

An owner that had nothing queued does not bank credit: its virtual time is
lifted to one claim (at weight 1) behind the most-served active owner, so a
newcomer is served next without taking a burst of turns.

An owner of a pooled claim has one entry per model in the heap, all sharing
its virtual time: an entry whose owner was served since it was pushed is
re-queued with the current time when it surfaces (a lazy heap), so a claim
never walks an owner's other entries after each pick.

This module is pure ordering: the SQL that feeds it and takes the jobs is in
:mod:`.claiming`.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import NamedTuple

from openbeepboop_schemas import ANY_MODEL

#: How far (in claims at weight 1) a returning owner may be behind the most-served one.
MAX_CREDIT = 1.0

#: The model under which a claim over several models keeps each owner's
#: virtual time (a ``fair_shares`` row): ``*``, because no claim over one
#: model can use it (a node declaring ``*`` claims any model, pooled).
POOLED = ANY_MODEL


class Head(NamedTuple):
    """An owner's next claimable job of one model, as the claim's skip scan found it.

    A named tuple: a claim makes one per owner with queued jobs.
    """

    model: str
    owner: int
    rank: float
    priority: int
    weight: int
    #: The owner's stored virtual time under the claim's share (the model, or
    #: :data:`POOLED`); None if it never had one.
    virtual_time: float | None
    #: The job's ``seq``: after ``rank``, the order of an owner's jobs (of any model).
    seq: int = 0


def claim_rank(created_at: float, priority: int, aging_seconds: float) -> float:
    """The order of a job among its owner's: as if submitted ``priority`` aging steps earlier."""
    return created_at - priority * aging_seconds


@dataclass
class _Owner:
    #: The ``fair_shares`` model its virtual time is kept under: its model, or :data:`POOLED`.
    share: str
    owner: int
    weight: int
    start: float
    virtual_time: float
    served: int = 0


#: A heap entry: (minus the level, virtual time when pushed, rank, seq, model, owner).
_Key = tuple[int, float, float, int, str, int]


class Turns:
    """Whose job comes next, over the owners with claimable jobs of the fetched models.

    Built from each owner's head of each model; told after every claim what
    the owner's next job of that model ranks (:meth:`served`), or that it has
    none left (:meth:`exhausted`).
    """

    def __init__(
        self,
        heads: list[Head],
        *,
        now: float,
        aging_seconds: float,
        picks: int | None = None,
        pooled: bool = False,
    ) -> None:
        """``picks``: at most this many jobs will be taken, so only the ``picks`` owners
        that come first can be served (each pick moves one owner back; the others
        keep their places) and only they are kept: with 1,000 owners queued, a
        claim of 4 orders 4 owners, not 1,000. ``pooled``: the claim is over several
        models and the heads' virtual times are the owners' :data:`POOLED` ones."""
        self._now = now
        self._aging = aging_seconds
        self._pooled = pooled
        self._top: dict[str, int] = {}
        most: dict[str, float] = {}
        for head in heads:
            self._top[head.model] = max(self._top.get(head.model, head.priority), head.priority)
            if head.virtual_time is not None:
                share = POOLED if pooled else head.model
                most[share] = max(most.get(share, head.virtual_time), head.virtual_time)
        floors = {share: value - MAX_CREDIT for share, value in most.items()}
        # One pass, no method calls per owner: a claim does this for every owner queued.
        tops, aging, floor_of = self._top, aging_seconds, math.floor
        entries: list[tuple[_Key, Head]] = []
        for head in heads:
            model, vt = head.model, head.virtual_time
            least = floors.get(POOLED if pooled else model, 0.0)
            start = least if vt is None or vt < least else vt
            level = min(floor_of((now - head.rank) / aging), tops[model])
            entries.append(((-level, start, head.rank, head.seq, model, head.owner), head))
        if picks is not None and picks < len(entries):
            entries = _first_owners(entries, picks) if pooled else heapq.nsmallest(picks, entries)
        self._owners: dict[tuple[str, int], _Owner] = {}
        self._heap: list[_Key] = []
        for key, head in entries:
            unit = self._unit(head.model, head.owner)
            if unit not in self._owners:
                weight = max(head.weight, 1)
                self._owners[unit] = _Owner(unit[0], head.owner, weight, key[1], key[1])
            self._heap.append(key)
        heapq.heapify(self._heap)

    def _unit(self, model: str, owner: int) -> tuple[str, int]:
        """Whose turns a job of ``model`` uses: the owner's for the model, or its pooled ones."""
        return (POOLED if self._pooled else model, owner)

    def weight(self, model: str, owner: int) -> int:
        """The weight of an owner this claim may serve."""
        return self._owners[self._unit(model, owner)].weight

    def level(self, model: str, rank: float) -> int:
        """The level of a job of ``model`` with ``rank``: priority plus aging, capped at the top."""
        aged = math.floor((self._now - rank) / self._aging)
        return min(aged, self._top[model])

    def _push(self, state: _Owner, model: str, rank: float, seq: int) -> None:
        level = -self.level(model, rank)
        key = (level, state.virtual_time, rank, seq, model, state.owner)
        heapq.heappush(self._heap, key)

    def next(self) -> tuple[str, int] | None:
        """The (model, owner) whose job is claimed next, or None when no owner is left.

        An entry pushed before its owner was served again (a pooled owner's
        other models) is put back with the owner's current virtual time first.
        """
        heap = self._heap
        while heap:
            level, pushed, rank, seq, model, owner = heap[0]
            current = self._owners[self._unit(model, owner)].virtual_time
            if pushed == current:
                heapq.heappop(heap)
                return model, owner
            heapq.heapreplace(heap, (level, current, rank, seq, model, owner))
        return None

    def served(self, model: str, owner: int, next_rank: float, next_seq: int = 0) -> None:
        """One job of the owner was claimed; its next one of ``model`` ranks
        ``next_rank`` (then ``next_seq``)."""
        state = self._count(model, owner)
        self._push(state, model, next_rank, next_seq)

    def exhausted(self, model: str, owner: int, *, claimed_one: bool) -> None:
        """The owner has no claimable job of ``model`` left (after one more was
        claimed, if ``claimed_one``)."""
        if claimed_one:
            self._count(model, owner)

    def _count(self, model: str, owner: int) -> _Owner:
        state = self._owners[self._unit(model, owner)]
        state.served += 1
        state.virtual_time += 1.0 / state.weight
        return state

    def advances(self) -> list[tuple[str, int, float, float]]:
        """What to store: (model or :data:`POOLED`, owner, floor, added virtual time)
        of every owner served.

        The store adds to ``max(stored, floor)`` rather than writing the
        value computed here, so concurrent claimers (PostgreSQL replicas)
        never overwrite each other's turns.
        """
        return sorted(
            (state.share, state.owner, state.start, state.virtual_time - state.start)
            for state in self._owners.values()
            if state.served
        )


def _first_owners(entries: list[tuple[_Key, Head]], picks: int) -> list[tuple[_Key, Head]]:
    """The entries of the ``picks`` owners that come first, each by its best entry.

    A pooled owner has one entry per model and a pick moves all of them back,
    so keeping the ``picks`` first *entries* could keep one owner's five
    models and drop the owner that is due second. Owners as a whole keep the
    argument of ``picks`` exact: a pick moves only the owner served back.
    """
    best: dict[int, _Key] = {}
    for key, _ in entries:
        owner = key[5]
        if owner not in best or key < best[owner]:
            best[owner] = key
    if len(best) <= picks:
        return entries
    kept = {key[5] for key in heapq.nsmallest(picks, best.values())}
    return [entry for entry in entries if entry[0][5] in kept]
