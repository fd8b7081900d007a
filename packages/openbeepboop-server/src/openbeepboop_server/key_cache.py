"""Authenticated keys kept in memory on PostgreSQL, dropped the moment any key changes.

Every request is authenticated. On SQLite the event loop reads the key
itself (one indexed read, ~20 us). On PostgreSQL the lookup is a network
round trip, so it runs in a worker thread: two cross-thread wake-ups and a
round trip on every request, the largest share of an idle replica's CPU
with 1,000 long-polling nodes, and part of every pickup's latency. So a
replica on PostgreSQL remembers the keys it has seen, under three rules that
keep "a revoked key stops working at once" true in every replica:

* **Invalidated by the database.** Revoking or changing a key (the
  ``keys`` CLI, from any machine) records ``keys`` in its transaction's
  notice (:mod:`openbeepboop_server.db.notify`); PostgreSQL delivers it to
  every replica's ``LISTEN`` connection when the change commits, and the
  listener thread drops the whole cache there and then. Until it has, a
  notice that has reached the replica's socket but is still unread makes
  every request read its key (a ``poll()`` of that socket, a few
  microseconds), so a revoke is not served from memory while the thread
  is merely waiting for its turn on a busy machine.
* **Only while listening.** Entries are used only while the replica's
  ``LISTEN`` connection is up: when it is lost (notices sent meanwhile are
  gone) the cache is dropped and switched off until it listens again.
* **Short-lived anyway.** An entry is used for at most
  :data:`MAX_AGE_SECONDS`, so even a key edited by hand in the database
  (which sends no notice) stops working within that time; an expiring key
  (``--expires``) is refused from its expiry on, cached or not.

A fill races an invalidation by a generation number: a lookup that read the
database before a drop may not store what it read after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

#: Longest an entry is used without reading the key again.
MAX_AGE_SECONDS = 10.0
#: Entries kept at most (one per key in use); past it the cache starts afresh.
MAX_ENTRIES = 10_000

T = TypeVar("T")


@dataclass(frozen=True)
class _Entry(Generic[T]):
    value: T
    #: Wall-clock expiry of the key itself (Unix seconds), if it has one.
    expires_at: float | None
    #: Monotonic time after which the entry is not used.
    stale_at: float


class KeyCache(Generic[T]):
    """Key digest → what authenticating it gave; off until :meth:`enable` is called.

    Thread-safe: requests read it on the event loop, lookups fill it from
    worker threads, the ``LISTEN`` thread drops it.
    """

    def __init__(
        self,
        max_age: float | None = None,
        max_entries: int = MAX_ENTRIES,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_age = MAX_AGE_SECONDS if max_age is None else max_age
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry[T]] = {}
        self._generation = 0
        self._enabled = False
        self._unread: Callable[[], bool] | None = None

    @property
    def enabled(self) -> bool:
        """True while entries are kept and used (the replica is listening)."""
        return self._enabled

    @property
    def generation(self) -> int:
        """Read before a lookup and passed to :meth:`put` after it."""
        return self._generation

    def get(self, digest: str, now: float) -> T | None:
        """What ``digest`` authenticated as, if cached, fresh, and not expired at ``now``."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        unread = self._unread
        if unread is not None and unread():
            return None  # a key change may be waiting to be read: ask the database
        if (entry.expires_at is not None and entry.expires_at <= now) or (
            self._monotonic() >= entry.stale_at
        ):
            self._entries.pop(digest, None)
            return None
        return entry.value

    def put(self, digest: str, value: T, expires_at: float | None, generation: int) -> None:
        """Keep ``value`` unless the cache is off or was dropped since ``generation`` was read."""
        with self._lock:
            if not self._enabled or generation != self._generation:
                return
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[digest] = _Entry(value, expires_at, self._monotonic() + self._max_age)

    def drop(self) -> None:
        """Forget every entry: a key changed somewhere."""
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def enable(self, unread: Callable[[], bool] | None = None) -> None:
        """Start keeping entries (the replica now hears every key change).

        ``unread``: True while a notice may be waiting, not yet taken in;
        no entry is used meanwhile.
        """
        with self._lock:
            self._generation += 1
            self._enabled = True
            self._unread = unread

    def disable(self) -> None:
        """Forget every entry and keep none (key changes may go unheard)."""
        with self._lock:
            self._generation += 1
            self._enabled = False
            self._unread = None
            self._entries.clear()
