"""The pool status as served: built at most once per :data:`STATUS_CACHE_SECONDS` per process.

The status page refreshes itself every few seconds in every tab that shows
it, and a build counts the live queue (~0.1 s of SQLite with 1M jobs
queued). So the JSON is kept for a moment and shared: however many viewers,
a process reads the database for it at most once per period, and requests
arriving during a build wait for that build instead of starting their own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from anyio.to_thread import run_sync
from openbeepboop_schemas import PoolStatus

#: How long a built status is served again; well under the page's refresh period.
STATUS_CACHE_SECONDS = 2.0


class StatusCache:
    """The last pool status of this process, as JSON bytes, with when it was built."""

    def __init__(
        self, ttl: float = STATUS_CACHE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._body: bytes | None = None
        self._built_at = 0.0
        self._lock: asyncio.Lock | None = None

    async def get(self, build: Callable[[], PoolStatus]) -> bytes:
        """The cached JSON while fresh, else ``build()`` (in a worker thread) serialised."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._body is not None and self._clock() - self._built_at < self._ttl:
                return self._body
            status = await run_sync(build)
            self._body = status.model_dump_json().encode()
            self._built_at = self._clock()
            return self._body
