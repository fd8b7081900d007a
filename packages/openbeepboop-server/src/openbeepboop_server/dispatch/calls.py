"""Where a service call runs: inline on the event loop when that is cheaper, else in a thread.

Handing a call to a worker thread costs two cross-thread wake-ups (the worker,
then the loop); on a small VM that is ~1 ms of CPU and latency, more than a
small SQLite transaction itself (0.2-0.4 ms for one submit, a one-job claim,
one result or a poll of a few ids). So on SQLite a *small* call (a handful
of jobs, leases, outcomes or ids) runs inline when the one writer is free.
Everything else keeps the thread pool (anyio's worker threads, the ones
Starlette's ``run_in_threadpool`` uses): large calls (they would hold the loop
for milliseconds), PostgreSQL (a network round trip must never block the
loop), and any call made while another thread is writing (it would wait for
the writer lock on the loop). A thread that grabs the lock in the instant
between the check and the call makes the loop wait for one short write at
most; no thread ever waits for the loop while holding the lock, so that
cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from anyio.to_thread import run_sync

from openbeepboop_server.db.database import Database

T = TypeVar("T")

#: Jobs, leases or outcomes up to which a call counts as small.
INLINE_MAX_ITEMS = 8
#: Request bytes up to which a call counts as small: a job or result this size
#: is serialised and written in well under a millisecond; a 10 MB one is not.
INLINE_MAX_BYTES = 16 * 1024


def weight(items: int, body_bytes: int) -> int:
    """The ``items`` a call counts as: a large body makes any call large."""
    return items if body_bytes <= INLINE_MAX_BYTES else max(items, INLINE_MAX_ITEMS + 1)


async def run_service(db: Database, items: int, func: Callable[..., T], *args: object) -> T:
    """``func(*args)``, inline if small and the SQLite writer is free, else in the thread pool."""
    if items <= INLINE_MAX_ITEMS and db.writer_idle:
        return func(*args)
    return await run_sync(func, *args)
