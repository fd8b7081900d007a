"""Several queue server URLs: which one to call now, and when to move to another.

Every replica shares one database, so any of them can serve any call: a
lease claimed through one is extended and finished through another. The
policy (docs/node.md, "Several server URLs"):

- **Stick** to one URL, the first in the list to begin with: one keep-alive
  connection, no spreading of one node's calls over replicas for nothing.
- **Fail over in order** when the URL in use stops answering (connection
  refused or reset, timeout, 502/503/504): the same call goes at once to
  the next URL, and the node stays there. Only when every URL failed does
  the call fail, and the caller's backoff applies as with one server.
- **Come back to the first URL** ``failback`` seconds after leaving it (if
  it fails again, the node moves on again at once). The order is the
  operator's preference (the nearest replica, or an order per node that
  spreads nodes over replicas); without coming back, every node that ever
  fled a restarted replica would stay on the survivors for good.

The node's fetch, heartbeat and delivery loops share one pool, so one
failure moves all of them; a failure seen on a URL the pool has already
left does not move it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)

#: Seconds after leaving the first URL before calls try it again.
DEFAULT_FAILBACK_SECONDS = 120.0


def split_urls(value: str | Sequence[str]) -> list[str]:
    """URLs from a comma-separated string or a list (of such strings), blanks dropped."""
    parts = [value] if isinstance(value, str) else list(value)
    return [url.strip() for part in parts for url in part.split(",") if url.strip()]


class ServerPool:
    """The ordered server URLs of one node and the one in use."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        failback: float = DEFAULT_FAILBACK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("at least one server URL is needed")
        self.urls = [url.rstrip("/") for url in urls]
        self.failback = failback
        self._clock = clock
        self._current = 0
        self._left_first_at: float | None = None
        #: URLs whose failure was logged and that have not answered since.
        self._down: set[str] = set()

    @property
    def current(self) -> str:
        """The URL calls go to first."""
        return self.urls[self._current]

    def label(self) -> str:
        """All URLs, for log lines: ``http://a (then http://b)``."""
        if len(self.urls) == 1:
            return self.urls[0]
        return f"{self.current} (then {', '.join(u for u in self.urls if u != self.current)})"

    def order(self) -> list[str]:
        """The URLs one call tries, in turn: the one in use, then the others in order."""
        if (
            self._current != 0
            and self._left_first_at is not None
            and self._clock() - self._left_first_at >= self.failback
        ):
            logger.info("trying the first queue server %s again", self.urls[0])
            self._current = 0
            self._left_first_at = None
        n = len(self.urls)
        return [self.urls[(self._current + i) % n] for i in range(n)]

    def failed(self, url: str, reason: object) -> None:
        """``url`` did not answer: if it is the one in use, move to the next one."""
        if len(self.urls) == 1 or url != self.current:
            return
        self._current = (self._current + 1) % len(self.urls)
        # The failback clock runs from the moment the first URL was left.
        if url == self.urls[0]:
            self._left_first_at = self._clock()
        elif self._current == 0:
            self._left_first_at = None
        if url not in self._down:  # once per outage, not once per retry
            self._down.add(url)
            logger.warning(
                "queue server %s unreachable (%s); moving to %s", url, reason, self.current
            )

    def succeeded(self, url: str) -> None:
        """``url`` answered: its next failure is logged again."""
        self._down.discard(url)
