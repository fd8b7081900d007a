"""How many long-polls each key may hold open at once.

A parked long-poll is cheap (:mod:`openbeepboop_server.dispatch.recheck`) but
not free: a connection, a task, a waiter. Without a bound one key could park
tens of thousands and take the file descriptors and memory every other key
needs. So each process counts, per API key, the client polls (``POST
/v1/results/poll`` with ``wait``) and the node fetches (``POST
/internal/queue/fetch`` with ``wait``) it is holding, each against its own
limit (``[server] max_polls_per_key`` and ``max_fetches_per_key``); one more
is refused with :class:`TooManyLongPolls` before it parks (the HTTP layer
answers ``429`` with ``Retry-After``). Calls without ``wait`` never count:
they answer at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from openbeepboop_server.errors import ServerError


class TooManyLongPolls(ServerError):  # noqa: N818 - the server's exceptions carry no suffix
    """The key already holds as many long-polls of this kind as its limit allows."""

    def __init__(self, kind: str, limit: int, setting: str) -> None:
        super().__init__(
            f"this API key already has {limit} {kind} waiting on this server "
            f"(the limit, [server] {setting}); wait for one to end, or send "
            "the same ids in one call"
        )
        self.limit = limit
        self.setting = setting


class LongPollSlots:
    """Counts the long-polls of one kind held per key (one per process and kind)."""

    def __init__(self, kind: str, limit: int, setting: str) -> None:
        self.kind = kind
        self.limit = limit
        self.setting = setting
        self._held: dict[int, int] = {}

    def held(self, key_id: int) -> int:
        """How many long-polls ``key_id`` holds right now."""
        return self._held.get(key_id, 0)

    @contextlib.contextmanager
    def hold(self, key_id: int) -> Iterator[None]:
        """One slot of ``key_id`` for the block; :class:`TooManyLongPolls` if none is free."""
        held = self._held.get(key_id, 0)
        if held >= self.limit:
            raise TooManyLongPolls(self.kind, self.limit, self.setting)
        self._held[key_id] = held + 1
        try:
            yield
        finally:
            left = self._held[key_id] - 1
            if left:
                self._held[key_id] = left
            else:
                del self._held[key_id]
