"""One fetch of the fetch loop (:meth:`Fetcher._fetch`) when the loop itself is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace

from openbeepboop_node.fetching import Fetcher


class _HangingClient:
    """A queue client whose fetch waits until it is cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.ended: BaseException | None = None

    async def fetch(self, models: Sequence[str], *args: object, **kwargs: object) -> list[object]:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError as exc:
            self.ended = exc
            raise
        return []


async def test_a_fetch_is_not_left_running_when_the_fetch_loop_is_cancelled() -> None:
    # The loop is cancelled when the node stops or a background loop fails (a
    # refused key): a fetch left running would hold its connection and, once it
    # failed, print "Task exception was never retrieved" at exit.
    client = _HangingClient()
    fetcher = object.__new__(Fetcher)  # only what _fetch reads
    fetcher._health = SimpleNamespace(live=["m"])  # type: ignore[assignment]
    fetcher._client = client  # type: ignore[assignment]
    fetcher._refuse = None  # type: ignore[assignment]
    fetcher._interrupt = asyncio.Event()
    one = asyncio.ensure_future(fetcher._fetch(["m"], 1, 30.0))
    await client.started.wait()
    one.cancel()
    await asyncio.gather(one, return_exceptions=True)
    assert isinstance(client.ended, asyncio.CancelledError)
