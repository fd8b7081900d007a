"""Small service calls run on the event loop on SQLite; everything else in a thread."""

from __future__ import annotations

import asyncio
import threading

import pytest
from openbeepboop_server.db.database import Database
from openbeepboop_server.dispatch.calls import INLINE_MAX_ITEMS, run_service


def _where() -> threading.Thread:
    return threading.current_thread()


def test_small_calls_run_inline_large_ones_in_a_thread(db: Database) -> None:
    async def check() -> None:
        loop_thread = threading.current_thread()
        assert await run_service(db, 1, _where) is loop_thread
        assert await run_service(db, INLINE_MAX_ITEMS, _where) is loop_thread
        assert await run_service(db, INLINE_MAX_ITEMS + 1, _where) is not loop_thread

    asyncio.run(check())


def test_a_busy_writer_sends_even_small_calls_to_a_thread(db: Database) -> None:
    async def check() -> None:
        loop_thread = threading.current_thread()
        with db.write():  # another writer holds the lock: waiting for it must not block the loop
            assert await run_service(db, 1, _where) is not loop_thread
        assert await run_service(db, 1, _where) is loop_thread

    asyncio.run(check())


def test_errors_reach_the_caller_either_way(db: Database) -> None:
    def boom() -> None:
        raise ValueError("boom")

    async def check() -> None:
        with pytest.raises(ValueError):
            await run_service(db, 1, boom)
        with pytest.raises(ValueError):
            await run_service(db, INLINE_MAX_ITEMS + 1, boom)

    asyncio.run(check())
