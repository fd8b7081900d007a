"""How much, and for how long, one request to the queue server may take from the node.

**Size.** An answer is read until it passes the most a legitimate one can
hold, counted after decompression, and not a byte further: a server (or anything
answering in its place) sending gigabytes, or a small gzip body that
inflates to gigabytes, costs the node at most that much memory. A fetch
answer holds at most ``max_jobs`` leases, each a request the server accepted
under its own body limit, so its bound is ``max_jobs`` times
``max_lease_bytes`` (:func:`fetch_answer_cap`); every other answer names at
most 1,000 jobs (:data:`MAX_OTHER_ANSWER_BYTES`).

**Time.** aiohttp's per-read timeout alone lets a server that trickles a
byte every few seconds hold a request for ever. Each request also has a
deadline over the whole exchange: the connect allowance, the long-poll
wait, the read margin and the bytes sent at :data:`MIN_BYTES_PER_SECOND`;
every chunk of the answer that arrives moves it on by its own size at that
rate. A slow but progressing upload or answer finishes; a trickle does not.
Either bound cut short counts as a server failure (back off, retry; the
results stay in the spool). docs/node.md, "A broken or hostile server",
gives the figures.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

if sys.version_info >= (3, 11):
    from asyncio import timeout_at
else:  # asyncio.timeout's backport: a dependency of aiohttp itself before 3.11
    from async_timeout import timeout_at  # type: ignore[import-not-found, unused-ignore]

#: The largest lease the node expects by default: the server's default
#: ``max_body_bytes`` (10 MiB) for the request it carries, with room for the
#: lease's own fields and for JSON written more verbosely than it was sent. A
#: server whose ``max_body_bytes`` is higher needs ``max_lease_bytes`` raised.
DEFAULT_MAX_LEASE_BYTES = 16 * 1024 * 1024
#: The smallest ``max_lease_bytes`` a config may set: the server's floor for ``max_body_bytes``.
MIN_MAX_LEASE_BYTES = 1024
#: What a fetch answer holds beyond its leases (the array's brackets and commas).
FETCH_ANSWER_SLACK_BYTES = 64 * 1024
#: Any other answer (acks, heartbeat and watch answers, error envelopes): at
#: most 1,000 job ids (``MAX_SUBMIT_OUTCOMES``, ``MAX_HEARTBEAT_LEASES``) of
#: up to 128 characters, each with its ack or status, is about 300 KB; more
#: than ten times that leaves room for fields a newer server adds.
MAX_OTHER_ANSWER_BYTES = 4 * 1024 * 1024
#: The slowest transfer a request may keep up and still finish: 64 KiB/s
#: (about 0.5 Mbit/s), below any link a node should run on, so a 32 MB
#: delivery over a poor uplink still gets its ~8.5 minutes; a server that
#: trickles slower than this is cut off.
MIN_BYTES_PER_SECOND = 64 * 1024


class AnswerTooLargeError(Exception):
    """The server's answer passed the most a legitimate one can hold."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"more than {cap:,} bytes, the most a legitimate one holds")
        self.cap = cap


def fetch_answer_cap(max_jobs: int, max_lease_bytes: int) -> int:
    """The most a fetch answer for ``max_jobs`` leases can legitimately hold, in bytes."""
    return max_jobs * max_lease_bytes + FETCH_ANSWER_SLACK_BYTES


def transfer_seconds(size: int) -> float:
    """How long ``size`` bytes may take at the slowest rate a request may keep up."""
    return size / MIN_BYTES_PER_SECOND


class Deadline:
    """The deadline of one whole request, moved on as bytes arrive.

    Use as ``async with Deadline(when) as deadline:``; the block raises
    ``asyncio.TimeoutError`` once the deadline passes.
    """

    def __init__(self, when: float) -> None:
        #: Event loop time at which the request is cut.
        self.when = when
        self._scope: Any = timeout_at(when)

    async def __aenter__(self) -> Deadline:
        await self._scope.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        result: bool | None = await self._scope.__aexit__(*exc_info)
        return result

    def received(self, size: int) -> None:
        """``size`` more bytes arrived: they earn their time at the slowest rate."""
        self.when += transfer_seconds(size)
        self._scope.reschedule(self.when)


async def read_answer(response: aiohttp.ClientResponse, cap: int, deadline: Deadline) -> bytes:
    """The whole body (decompressed), read only up to ``cap`` bytes.

    Raises AnswerTooLargeError past ``cap``: the connection is dropped, the
    rest never read.
    """
    chunks: list[bytes] = []
    size = 0
    while chunk := await response.content.readany():
        size += len(chunk)
        if size > cap:
            response.close()
            raise AnswerTooLargeError(cap)
        chunks.append(chunk)
        deadline.received(len(chunk))
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
