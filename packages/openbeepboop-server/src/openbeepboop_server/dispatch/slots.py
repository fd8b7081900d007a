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

A fetch also declares models, up to 256 names of up to 256 characters each,
and everything a parked fetch costs the process's wake-ups and its periodic
re-check follows the distinct names parked, not the fetches: so each key's
fetches together may wait for at most ``[limits] max_fetch_models_per_key``
distinct model names (:class:`ModelSlots`); a fetch that would bring one more
is refused the same way.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Iterator

from openbeepboop_server.errors import ServerError

#: What a key past its poll limit may do instead.
POLL_ADVICE = "send the same ids in one call"


class TooManyLongPolls(ServerError):  # noqa: N818 - the server's exceptions carry no suffix
    """The key already holds as many long-polls of this kind as its limit allows."""

    def __init__(
        self,
        kind: str,
        limit: int,
        setting: str,
        message: str | None = None,
        *,
        section: str = "server",
        advice: str = POLL_ADVICE,
    ) -> None:
        super().__init__(
            message
            or f"this API key already has {limit} {kind} waiting on this server "
            f"(the limit, [{section}] {setting}); wait for one to end, or {advice}"
        )
        self.limit = limit
        self.setting = setting


class LongPollSlots:
    """Counts the long-polls of one kind held per key (one per process and kind).

    ``section`` and ``advice``: where the limit is set and what to do
    instead, for the refusal's message.
    """

    def __init__(
        self,
        kind: str,
        limit: int,
        setting: str,
        *,
        section: str = "server",
        advice: str = POLL_ADVICE,
    ) -> None:
        self.kind = kind
        self.limit = limit
        self.setting = setting
        self._section = section
        self._advice = advice
        self._held: dict[int, int] = {}

    def held(self, key_id: int) -> int:
        """How many long-polls ``key_id`` holds right now."""
        return self._held.get(key_id, 0)

    @contextlib.contextmanager
    def hold(self, key_id: int) -> Iterator[None]:
        """One slot of ``key_id`` for the block; :class:`TooManyLongPolls` if none is free."""
        held = self._held.get(key_id, 0)
        if held >= self.limit:
            raise TooManyLongPolls(
                self.kind, self.limit, self.setting, section=self._section, advice=self._advice
            )
        self._held[key_id] = held + 1
        try:
            yield
        finally:
            left = self._held[key_id] - 1
            if left:
                self._held[key_id] = left
            else:
                del self._held[key_id]


class ModelSlots:
    """Counts the distinct model names each key's fetch long-polls wait for (one per process).

    A key's nodes normally declare the same few models, so a pool of hundreds
    of nodes holds few names; only a key inventing names approaches the limit.
    """

    setting = "max_fetch_models_per_key"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # Per key: how many of its fetches wait for each model name.
        self._held: dict[int, Counter[str]] = {}

    def held(self, key_id: int) -> int:
        """How many distinct model names ``key_id``'s fetches wait for right now."""
        return len(self._held.get(key_id, ()))

    @contextlib.contextmanager
    def hold(self, key_id: int, models: Iterable[str]) -> Iterator[None]:
        """``models`` counted for ``key_id`` during the block; :class:`TooManyLongPolls`
        if they would take the key past :attr:`limit` distinct names."""
        names = set(models)
        counts = self._held.get(key_id)
        if counts is None:
            counts = Counter()
        new = sum(1 for name in names if name not in counts)
        if len(counts) + new > self.limit:
            raise TooManyLongPolls(
                "models",
                self.limit,
                self.setting,
                f"this API key's fetches already wait for {len(counts)} distinct models and "
                f"this one would add {new} (the limit is {self.limit}, [limits] "
                f"{self.setting}); declare the models your nodes serve",
            )
        counts.update(names)
        self._held[key_id] = counts
        try:
            yield
        finally:
            counts.subtract(names)
            for name in names:
                if counts[name] <= 0:
                    del counts[name]
            if not counts:
                self._held.pop(key_id, None)
