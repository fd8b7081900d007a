"""Leases a node's heartbeat or delivery is on its way to write: the reaper leaves them be.

On SQLite every write waits for the one writer (:mod:`..db.database`). When
that writer is busy for seconds (a big bulk submit on a starved core), a
heartbeat or a result can arrive before its lease runs out and still reach
the writer after the reaper, which then takes back a lease whose node was
heard from in time: the node's work is thrown away and the job runs again.
So a heartbeat or a delivery marks its leases here before it queues for the
writer, and the reaper skips marked leases. Whoever reaches the server first
wins, as it would with an idle writer: a heartbeat that arrived in time
extends its lease, a result that arrived in time is kept.

The marks live in one process. That covers SQLite, where one server process
is the only writer; PostgreSQL replicas write concurrently, and there the
reaper's ``FOR UPDATE SKIP LOCKED`` already skips a row that a heartbeat or
a delivery holds.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterable, Iterator


class LeaseArrivals:
    """Lease tokens with a heartbeat or a delivery between arrival and commit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # A count, not a set: two requests may carry the same token at once
        # (a delivery retried while its first attempt still waits).
        self._tokens: Counter[str] = Counter()

    @contextlib.contextmanager
    def arriving(self, tokens: Iterable[str]) -> Iterator[None]:
        """Mark ``tokens`` until the block ends (its transaction committed or failed)."""
        marked = list(tokens)
        with self._lock:
            self._tokens.update(marked)
        try:
            yield
        finally:
            with self._lock:
                self._tokens.subtract(marked)
                for token in marked:
                    if self._tokens[token] <= 0:
                        del self._tokens[token]

    def marked(self) -> frozenset[str]:
        """The tokens marked right now."""
        with self._lock:
            return frozenset(self._tokens)
