"""A request's ``http.disconnect``, turned into the dispatch layer's disconnect callback.

A long-poll in :mod:`openbeepboop_server.dispatch.waiting` takes a
:data:`~openbeepboop_server.dispatch.waiting.DisconnectWatch`; the handlers
pass ``functools.partial(disconnect_watch, request)``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.requests import Request

from openbeepboop_server.dispatch.wakeups import Waiter

#: Disconnect listeners cancelled but not yet finished (the loop only holds weak references).
_ending_listeners: set[asyncio.Task[None]] = set()


@contextlib.asynccontextmanager
async def disconnect_watch(request: Request, waiter: Waiter) -> AsyncIterator[None]:
    """While the block runs, a client disconnect marks ``waiter`` as disconnected.

    Only use after the body has been read: from then on the only message the
    server can deliver is ``http.disconnect``. The body's bytes are let go of
    here: the long-poll may park for half a minute holding only what it
    parsed out of them, while Starlette would keep the raw body (up to
    ``max_body_bytes``) cached on the request.
    """
    release_body(request)
    task = asyncio.ensure_future(_listen(request, waiter))
    try:
        yield
    finally:
        # Not awaited: the answer goes out in this turn of the loop, and the
        # listener finishes its cancellation in the next (kept referenced until then).
        task.cancel()
        _ending_listeners.add(task)
        task.add_done_callback(_listener_ended)


def release_body(request: Request) -> None:
    """Drop the body Starlette cached on ``request`` (already parsed; nobody reads it again)."""
    cached = vars(request)
    cached.pop("_body", None)
    cached.pop("_json", None)


async def _listen(request: Request, waiter: Waiter) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            waiter.disconnect()
            return


def _listener_ended(task: asyncio.Task[None]) -> None:
    _ending_listeners.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a receive that failed has nothing left to tell
