"""The claim order: priority levels, then fair share between owners, then age.

The rule (docs/api.md, "Claim order"), per model:

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
3. **Within an owner:** by ``claim_rank`` (``created_at - priority * aging``,
   fixed at submit: a higher priority, or an older job, first), then ``seq``.

An owner that had nothing queued does not bank credit: its virtual time is
lifted to one claim (at weight 1) behind the most-served active owner, so a
newcomer is served next without taking a burst of turns.

This module is pure ordering: the SQL that feeds it and takes the jobs is in
:mod:`.claiming`.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import NamedTuple

#: How far (in claims at weight 1) a returning owner may be behind the most-served one.
MAX_CREDIT = 1.0


class Head(NamedTuple):
    """An owner's next claimable job of one model, as the claim's skip scan found it.

    A named tuple: a claim makes one per owner with queued jobs.
    """

    model: str
    owner: int
    rank: float
    priority: int
    weight: int
    #: The owner's stored virtual time for this model; None if it never had one.
    virtual_time: float | None


def claim_rank(created_at: float, priority: int, aging_seconds: float) -> float:
    """The order of a job among its owner's: as if submitted ``priority`` aging steps earlier."""
    return created_at - priority * aging_seconds


@dataclass
class _Owner:
    model: str
    owner: int
    weight: int
    start: float
    virtual_time: float
    served: int = 0


class Turns:
    """Whose job comes next, over the owners with claimable jobs of the fetched models.

    Built from each owner's head; told after every claim what the owner's next
    job ranks (:meth:`served`), or that it has none left (:meth:`exhausted`).
    """

    def __init__(
        self, heads: list[Head], *, now: float, aging_seconds: float, picks: int | None = None
    ) -> None:
        """``picks``: at most this many jobs will be taken, so only the ``picks`` owners
        that come first can be served (each pick moves one owner back; the others
        keep their places) and only they are kept: with 1,000 owners queued, a
        claim of 4 orders 4 owners, not 1,000."""
        self._now = now
        self._aging = aging_seconds
        self._top: dict[str, int] = {}
        self._floor: dict[str, float] = {}
        for head in heads:
            self._top[head.model] = max(self._top.get(head.model, head.priority), head.priority)
            if head.virtual_time is not None:
                ceiling = self._floor.get(head.model, head.virtual_time)
                self._floor[head.model] = max(ceiling, head.virtual_time)
        self._floor = {model: most - MAX_CREDIT for model, most in self._floor.items()}
        self._owners: dict[tuple[str, int], _Owner] = {}
        # One pass, no method calls per owner: a claim does this for every owner queued.
        floors, tops, aging, floor_of = self._floor, self._top, aging_seconds, math.floor
        entries = []
        for head in heads:
            model, vt = head.model, head.virtual_time
            least = floors.get(model, 0.0)
            start = least if vt is None or vt < least else vt
            level = min(floor_of((now - head.rank) / aging), tops[model])
            entries.append(((-level, start, head.rank, model, head.owner), head))
        if picks is not None and picks < len(entries):
            entries = heapq.nsmallest(picks, entries)
        self._heap: list[tuple[int, float, float, str, int]] = []
        for key, head in entries:
            start = key[1]
            state = _Owner(head.model, head.owner, max(head.weight, 1), start, start)
            self._owners[(head.model, head.owner)] = state
            self._heap.append(key)
        heapq.heapify(self._heap)

    def weight(self, model: str, owner: int) -> int:
        """The weight of an owner this claim may serve."""
        return self._owners[(model, owner)].weight

    def level(self, model: str, rank: float) -> int:
        """The level of a job of ``model`` with ``rank``: priority plus aging, capped at the top."""
        aged = math.floor((self._now - rank) / self._aging)
        return min(aged, self._top[model])

    def _push(self, state: _Owner, rank: float) -> None:
        key = (-self.level(state.model, rank), state.virtual_time, rank, state.model, state.owner)
        heapq.heappush(self._heap, key)

    def next(self) -> tuple[str, int] | None:
        """The (model, owner) whose job is claimed next, or None when no owner is left."""
        if not self._heap:
            return None
        _, _, _, model, owner = heapq.heappop(self._heap)
        return model, owner

    def served(self, model: str, owner: int, next_rank: float) -> None:
        """One job of the owner was claimed; its next one ranks ``next_rank``."""
        state = self._count(model, owner)
        self._push(state, next_rank)

    def exhausted(self, model: str, owner: int, *, claimed_one: bool) -> None:
        """The owner has no claimable job left (after one more was claimed, if ``claimed_one``)."""
        if claimed_one:
            self._count(model, owner)

    def _count(self, model: str, owner: int) -> _Owner:
        state = self._owners[(model, owner)]
        state.served += 1
        state.virtual_time += 1.0 / state.weight
        return state

    def advances(self) -> list[tuple[str, int, float, float]]:
        """What to store: (model, owner, floor, added virtual time) of every owner served.

        The store adds to ``max(stored, floor)`` rather than writing the
        value computed here, so concurrent claimers (PostgreSQL replicas)
        never overwrite each other's turns.
        """
        return sorted(
            (state.model, state.owner, state.start, state.virtual_time - state.start)
            for state in self._owners.values()
            if state.served
        )
