"""An idle node in its own process, speaking through the node's own queue client.

``python -m harness.idle_node URL KEY NODE_ID`` (from ``bench/``) long-polls
for one job at a time with :class:`openbeepboop_node.queue_client.QueueClient`
(what ``openbeepboop-node run`` fetches with) and talks to its parent in lines:

* ``fetching`` - a fetch was just sent;
* ``leased <perf_counter> <job_id>`` - the lease arrived at that instant
  (``time.perf_counter`` is CLOCK_MONOTONIC on Linux: comparable across
  processes), and the job has been answered since.

A node of its own is what the pickup figure is about: the harness's user
side parses its ``202`` in its own process, as a real user does, instead of
holding the node's answer back behind that parse in a shared event loop.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
from openbeepboop_node.queue_client import QueueClient
from openbeepboop_schemas import Lease, ResultOutcome

from harness.cluster import MODEL
from harness.synthetic import RESULT

#: Longer than any gap between a fetch and the submit that answers it.
FETCH_WAIT_SECONDS = 30.0


class IdleNode:
    """One idle node's side of a pickup: one long-poll for one job, then its answer."""

    def __init__(self, url: str, key: str, node_id: str) -> None:
        self._client = QueueClient(url, key, node_id, fetch_wait=FETCH_WAIT_SECONDS)
        self._result = orjson.loads(RESULT)
        self._leases: list[Lease] = []

    async def fetch(self) -> list[str]:
        """Long-poll for one job (as ``openbeepboop-node run`` does when idle); the job ids."""
        self._leases = await self._client.fetch([MODEL], 1, FETCH_WAIT_SECONDS)
        return [lease.job_id for lease in self._leases]

    async def answer(self) -> None:
        """Deliver a canned result for each lease the last fetch brought."""
        outcomes = [
            ResultOutcome(job_id=lease.job_id, lease_token=lease.lease_token, result=self._result)
            for lease in self._leases
        ]
        if outcomes:
            await self._client.submit(outcomes)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


async def serve(url: str, key: str, node_id: str) -> None:
    """Fetch, report, answer; until the parent closes stdin (or the process is stopped)."""
    node = IdleNode(url, key, node_id)
    try:
        while True:
            fetch = asyncio.ensure_future(node.fetch())
            print("fetching", flush=True)
            job_ids = await fetch
            arrived = time.perf_counter()
            await node.answer()
            for job_id in job_ids:
                print(f"leased {arrived!r} {job_id}", flush=True)
    finally:
        await node.aclose()


def main() -> None:
    """Arguments: server URL, NODE key, node id."""
    url, key, node_id = sys.argv[1:4]
    asyncio.run(serve(url, key, node_id))


if __name__ == "__main__":
    main()
