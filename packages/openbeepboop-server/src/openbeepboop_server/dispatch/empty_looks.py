"""What each idle node's last fetch found (nothing), so its next fetch need not ask again.

An idle node's long-poll ends every ``wait`` seconds with ``[]`` and the node
asks again at once: a thousand idle nodes are 33 fetches a second, and each
used to cost a write transaction (the claim, which also refreshes the node's
registry row) and a read (``next_claimable_at``) in a worker thread — on
PostgreSQL, round trips that found nothing and changed nothing.

Every change that can make jobs claimable passes through this process's
:class:`~openbeepboop_server.dispatch.wakeups.Wakeups` first and bumps its
``generation``: jobs submitted, requeued or released here (submits, retries,
expired leases, batches released), the same from other replicas (their
notices), and news that may have been lost (the notice listener reconnecting,
a notice too large to say what changed). The one change that needs no event,
a backed-off job's ``not_before`` passing, is the ``wake_at`` the fetch read
with its look. So when a fetch found nothing at generation ``g``, the same
node asking again for the same models while the generation is still ``g``
and before ``wake_at`` would find nothing again: it parks at once instead.

What the skip leaves undone is covered by what covers a parked fetch anyway:
a change made where no event reaches this process (a second process on one
SQLite file) is found by the periodic re-check within ``recheck_seconds``
(:mod:`.recheck`), which wakes parked fetchers; and the registry row of a
node waiting in a fetch is kept fresh by the re-check's touch. The key's
scope is still checked on every fetch. A look is remembered per key, node
and declared facts: a node that changes its models or version, or comes with
another key, claims (and is recorded) as on its first fetch.
"""

from __future__ import annotations

from dataclasses import dataclass

from openbeepboop_schemas import FetchRequest

from openbeepboop_server.keys import Caller

#: Bound on the memory of looks (one small entry per idle node; cleared when full).
MAX_LOOKS = 10_000

#: Who asked, for what, declaring what: a look holds only for the same again.
LookKey = tuple[int, str, frozenset[str], tuple[str, ...], str | None]


@dataclass(frozen=True)
class Look:
    """A fetch's claim that found nothing: at which generation, and the next backoff's end."""

    generation: int
    wake_at: float | None


def look_key(caller: Caller, fetch: FetchRequest) -> LookKey:
    """The key a fetch's look is remembered under."""
    declared = tuple(fetch.declared_models)
    return (caller.key_id, fetch.node_id, frozenset(fetch.models), declared, fetch.version)


class EmptyLooks:
    """The last empty look of each idle node in this process (see the module docstring)."""

    def __init__(self) -> None:
        self._looks: dict[LookKey, Look] = {}

    def remember(self, key: LookKey, generation: int, wake_at: float | None) -> None:
        """A claim begun at ``generation`` found nothing, nor will before ``wake_at``."""
        if len(self._looks) >= MAX_LOOKS and key not in self._looks:
            self._looks.clear()  # many short-lived node ids: start over, stay bounded
        self._looks[key] = Look(generation, wake_at)

    def forget(self, key: LookKey) -> None:
        """The node claimed something: its next fetch looks for itself."""
        self._looks.pop(key, None)

    def unchanged(self, key: LookKey, generation: int, now: float) -> Look | None:
        """The remembered look if it still holds at ``generation`` and ``now``; else None."""
        look = self._looks.get(key)
        if look is None or look.generation != generation:
            return None
        if look.wake_at is not None and now >= look.wake_at:
            return None
        return look
