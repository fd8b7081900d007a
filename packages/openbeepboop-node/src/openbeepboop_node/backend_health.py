"""Pausing a model whose backend cannot be connected to, until a probe says it answers.

A job whose LLM call got no connection to its backend (refused, DNS, connect
timeout: :func:`~openbeepboop_node.inference.connection_failure`) did nothing
wrong: :mod:`~openbeepboop_node.running` hands its lease back (the server
requeues the job at once, no attempt counted) and calls :meth:`BackendHealth.pause`
for its ``[[models]]`` entry. A paused entry leaves :attr:`BackendHealth.live`,
the model list the node fetches and heartbeats with, so the server routes its
jobs elsewhere or keeps them queued; the node's other models keep working.
Leases of that entry still waiting for a slot are handed back too.

Meanwhile one task per paused entry probes the backend (:func:`~openbeepboop_node.backends.probe`,
a cheap ``GET`` of its model list, any HTTP answer is "up") with the node's
exponential backoff and jitter, from ``backoff_initial`` up to
``backend_probe_max`` seconds. Once it answers the entry is live again. A
backend with nothing to probe (a hosted provider of unknown address) is
resumed blind after the backoff: its next job is the probe, and costs nothing
if it fails too. The backoff grows across such pauses and starts over once a
call of that entry gets an answer. The pause and the recovery are logged once
each, never per job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import aiohttp

from openbeepboop_node.backends import Backend, open_session, probe
from openbeepboop_node.backoff import Backoff
from openbeepboop_node.exceptions import BackendUnreachableError

logger = logging.getLogger(__name__)

#: Told when an entry is paused (True) or live again (False).
ChangeCallback = Callable[[str, bool], None]


class BackendHealth:
    """Which of a node's model entries are paused, and the probes that end the pauses."""

    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        initial: float,
        maximum: float,
        on_change: ChangeCallback | None = None,
    ) -> None:
        self._backends = {backend.entry: backend for backend in backends}
        self._order = [backend.entry for backend in backends]
        self._initial = initial
        self._maximum = maximum
        self._on_change = on_change
        #: Paused entries and since when (monotonic seconds).
        self._paused: dict[str, float] = {}
        #: Entries whose backend failed since it last answered a call.
        self._backoffs: dict[str, Backoff] = {}
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        #: The entries to fetch for: every one not paused, in config order.
        #: Replaced, never changed in place, so a reader's copy stays valid.
        self.live: list[str] = list(self._order)

    @property
    def paused(self) -> list[str]:
        """The paused entries, in the order they were paused."""
        return list(self._paused)

    def is_paused(self, entry: str) -> bool:
        """Whether ``entry``'s jobs must not reach its backend now."""
        return entry in self._paused

    def pause(self, entry: str, reason: str) -> None:
        """``entry``'s backend could not be connected to: stop fetching it, start probing."""
        if entry in self._paused or entry not in self._backends:
            return
        backend = self._backends[entry]
        self._paused[entry] = time.monotonic()
        self.live = [name for name in self._order if name not in self._paused]
        logger.warning(
            "model %s: its backend cannot be reached (%s); its jobs go back to the queue "
            "with no attempt counted and none is fetched until %s",
            entry,
            reason,
            f"{backend.probe_url} answers" if backend.probe_url else "a later retry",
        )
        self._probes[entry] = asyncio.create_task(
            self._probe_until_up(backend), name=f"probe {entry}"
        )
        if self._on_change is not None:
            self._on_change(entry, True)

    def answered(self, entry: str) -> None:
        """A call of ``entry`` got an answer from its backend: its next pause backs off afresh."""
        if self._backoffs:
            self._backoffs.pop(entry, None)

    async def aclose(self) -> None:
        """Stop probing (at shutdown)."""
        probes = list(self._probes.values())
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _probe_until_up(self, backend: Backend) -> None:
        entry = backend.entry
        backoff = self._backoffs.setdefault(entry, Backoff(self._initial, self._maximum))
        while True:
            await asyncio.sleep(backoff.next_delay())
            if backend.probe_url is None:
                break  # nothing to ask: the next job is the probe
            if self._session is None:
                self._session = open_session()
            try:
                await probe(self._session, backend)
            except BackendUnreachableError as exc:
                logger.debug("model %s: backend still unreachable: %s", entry, exc)
                continue
            break
        self._resume(entry)

    def _resume(self, entry: str) -> None:
        since = self._paused.pop(entry, None)
        self._probes.pop(entry, None)
        self.live = [name for name in self._order if name not in self._paused]
        if since is not None:
            logger.warning(
                "model %s: %s after %.1f s; fetching its jobs again",
                entry,
                "its backend answers again"
                if self._backends[entry].probe_url
                else "trying its backend again",
                time.monotonic() - since,
            )
        if self._on_change is not None:
            self._on_change(entry, False)
