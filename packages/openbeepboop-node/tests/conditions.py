"""Waiting on conditions with generous deadlines, never on fixed sleeps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: Generous deadline for conditions on a loaded two-core machine.
DEADLINE_SECONDS = 30.0


async def wait_for(
    predicate: Callable[[], object], timeout: float = DEADLINE_SECONDS, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def wait_until(
    predicate: Callable[[], object], timeout: float = DEADLINE_SECONDS, what: str = "condition"
) -> None:
    """The blocking twin of :func:`wait_for`, for tests driving subprocesses."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
