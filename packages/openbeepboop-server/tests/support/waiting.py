"""Waiting on a condition in a synchronous test (the server tests do not install the test kit)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``condition`` until it is truthy; after ``timeout``, fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


#: How long an async test waits for a condition before failing (a loaded CI host is slow).
CONDITION_TIMEOUT = 20.0


async def eventually(condition: Callable[[], object], what: str) -> None:
    """Let the event loop run until ``condition()`` is truthy; fail naming ``what``."""
    deadline = time.monotonic() + CONDITION_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def timed(call: Awaitable[T]) -> tuple[T, float]:
    """``call``'s answer and the seconds it took."""
    started = time.monotonic()
    answer = await call
    return answer, time.monotonic() - started
