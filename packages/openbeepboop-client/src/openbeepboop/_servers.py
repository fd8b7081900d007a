"""Several server URLs (replicas on one database): which one to call, when to move on.

The same policy as the node's (docs/client.md, "Several server URLs"): calls
stick to one URL, the first to begin with; a call that finds it gone
(connection refused or reset, timeout, 502/503/504) goes at once to the next
URL, in order, and the client stays there; ``failback`` seconds after
leaving the first URL, calls try it again. Only when every URL failed does a
call count a retry and back off. Every request is safe to send twice (see
:mod:`openbeepboop._retry`), so sending it to another replica is too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)

#: Seconds after leaving the first URL before calls try it again.
DEFAULT_FAILBACK_SECONDS = 120.0
#: Answers that mean "this replica is gone, another may answer" (from a proxy in front).
FAILOVER_STATUSES = frozenset({502, 503, 504})


def split_urls(value: str | Sequence[str]) -> list[str]:
    """URLs from a comma-separated string or a list (of such strings), blanks dropped."""
    parts = [value] if isinstance(value, str) else list(value)
    return [url.strip() for part in parts for url in part.split(",") if url.strip()]


class ServerPool:
    """The ordered server URLs of one client and the one in use (thread-safe)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        failback: float = DEFAULT_FAILBACK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("at least one server URL is needed")
        self.urls = list(urls)
        self.failback = failback
        self._clock = clock
        self._current = 0
        self._left_first_at: float | None = None
        self._lock = threading.Lock()  # a sync Client may be shared by threads

    @property
    def current(self) -> str:
        """The URL calls go to first."""
        return self.urls[self._current]

    def order(self) -> list[str]:
        """The URLs one call tries, in turn: the one in use, then the others in order."""
        with self._lock:
            if (
                self._current != 0
                and self._left_first_at is not None
                and self._clock() - self._left_first_at >= self.failback
            ):
                self._current = 0
                self._left_first_at = None
            n = len(self.urls)
            return [self.urls[(self._current + i) % n] for i in range(n)]

    def failed(self, url: str, reason: str) -> None:
        """``url`` did not answer: if it is the one in use, move to the next one."""
        with self._lock:
            if len(self.urls) == 1 or url != self.current:
                return  # a failure on a URL already left moves nothing
            self._current = (self._current + 1) % len(self.urls)
            if url == self.urls[0]:
                self._left_first_at = self._clock()
            elif self._current == 0:
                self._left_first_at = None
            logger.info("server %s unreachable (%s); moving to %s", url, reason, self.current)
