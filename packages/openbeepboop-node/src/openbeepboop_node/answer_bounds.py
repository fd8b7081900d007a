"""How much, and for how long, one request to the queue server may take from the node.

**Size.** An answer is read until it passes the most a legitimate one can
hold, counted after decompression, and not a byte further: a server (or anything
answering in its place) sending gigabytes, or a small gzip body that
inflates to gigabytes, costs the node at most that much memory. A fetch
answer holds at most ``max_jobs`` leases, each a request the server accepted
under its own body limit, so its bound is ``max_jobs`` times
``max_lease_bytes`` (:func:`fetch_answer_cap`); every other answer names at
most 1,000 jobs (:data:`MAX_OTHER_ANSWER_BYTES`).

An answer cut short counts as a server failure (back off, retry; the
results stay in the spool). docs/node.md, "A broken or hostile server",
gives the figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

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


class AnswerTooLargeError(Exception):
    """The server's answer passed the most a legitimate one can hold."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"more than {cap:,} bytes, the most a legitimate one holds")
        self.cap = cap


def fetch_answer_cap(max_jobs: int, max_lease_bytes: int) -> int:
    """The most a fetch answer for ``max_jobs`` leases can legitimately hold, in bytes."""
    return max_jobs * max_lease_bytes + FETCH_ANSWER_SLACK_BYTES


async def read_answer(response: aiohttp.ClientResponse, cap: int) -> bytes:
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
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
