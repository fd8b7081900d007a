"""When to retry a request and how long to wait first.

Every request the client makes is safe to repeat: reads and polls change
nothing, cancel is idempotent, and each submit carries an ``Idempotency-Key``
so the server returns the first job again instead of making a second.
"""

from __future__ import annotations

import email.utils
import random
import time

import httpx

from openbeepboop import _constants

#: Statuses worth another try: timeout, conflict (a lock), rate limit, server errors.
RETRYABLE_STATUSES = frozenset({408, 409, 429})


def is_retryable_status(status_code: int) -> bool:
    """True for 408, 409, 429 and every 5xx."""
    return status_code in RETRYABLE_STATUSES or status_code >= 500


def is_retryable_transport_error(exc: httpx.TransportError) -> bool:
    """Network trouble is worth retrying; a malformed URL or protocol never gets better."""
    return not isinstance(exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError))


def retry_after_seconds(headers: httpx.Headers, now: float | None = None) -> float | None:
    """What ``Retry-After`` (or ``retry-after-ms``) asks for, if usable.

    Accepts seconds or an HTTP date; None when absent, unparseable, negative or
    above :data:`~openbeepboop._constants.MAX_RETRY_AFTER`.
    """
    seconds: float | None = None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            seconds = float(millis) / 1000.0
        except ValueError:
            seconds = None
    value = headers.get("retry-after")
    if seconds is None and value is not None:
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None
            seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds is None or not 0 <= seconds <= _constants.MAX_RETRY_AFTER:
        return None
    return seconds


def longest_backoff(retries_done: int) -> float:
    """The longest :func:`backoff_seconds` can be (no jitter taken off)."""
    return min(_constants.INITIAL_RETRY_DELAY * (2.0**retries_done), _constants.MAX_RETRY_DELAY)


def backoff_seconds(retries_done: int) -> float:
    """Exponential backoff with jitter for the retry after ``retries_done`` retries."""
    base = longest_backoff(retries_done)
    return base * (1.0 - _constants.RETRY_JITTER * random.random())  # noqa: S311 - not crypto


def retry_delay(retries_done: int, response: httpx.Response | None) -> float:
    """Seconds to sleep before the next attempt: the server's wish, else our backoff."""
    if response is not None:
        asked = retry_after_seconds(response.headers)
        if asked is not None:
            return asked
    return backoff_seconds(retries_done)
