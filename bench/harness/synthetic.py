"""Nodes without an LLM: the node protocol spoken with httpx, results made up.

A synthetic node measures the queue alone. Like a real node it fetches many
leases per request (long-polling) and delivers results in batches, but it
answers each lease at once with a fixed, valid ``chat.completion``, built
once as bytes so the harness's CPU stays out of the figure.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
from openbeepboop_schemas import FETCH_PATH, MAX_SUBMIT_OUTCOMES, QUEUE_SUBMIT_PATH

from harness.api import TIMEOUT, headers
from harness.cluster import MODEL

#: The result every synthetic job gets (a valid OpenAI ``chat.completion``).
RESULT = orjson.dumps(
    {
        "id": "chatcmpl-synthetic",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "synthetic answer"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
    }
)


class SyntheticNode:
    """One node id on one keep-alive connection pool."""

    def __init__(self, url: str, key: str, node_id: str) -> None:
        self.node_id = node_id
        self.http = httpx.AsyncClient(base_url=url, headers=headers(key), timeout=TIMEOUT)
        self._node = orjson.dumps(node_id)
        self.accepted = 0

    async def fetch(self, max_jobs: int, wait: float) -> list[dict[str, Any]]:
        """Claim up to ``max_jobs`` leases, long-polling up to ``wait``."""
        body = orjson.dumps(
            {"node_id": self.node_id, "models": [MODEL], "max_jobs": max_jobs, "wait": wait}
        )
        response = await self.http.post(FETCH_PATH, content=body)
        if response.status_code != 200:
            raise RuntimeError(f"fetch answered {response.status_code}: {response.text[:300]}")
        leases: list[dict[str, Any]] = orjson.loads(response.content)
        return leases

    async def deliver(self, leases: list[dict[str, Any]], release: bool = False) -> int:
        """Deliver a result (or a release) for each lease, batched; how many were accepted."""
        accepted = 0
        tail = b"}" if release else b',"result":' + RESULT + b"}"
        kind = b'{"kind":"release","job_id":' if release else b'{"kind":"result","job_id":'
        for start in range(0, len(leases), MAX_SUBMIT_OUTCOMES):
            chunk = leases[start : start + MAX_SUBMIT_OUTCOMES]
            # Spliced as bytes: the result is encoded once for the whole run.
            outcomes = b",".join(
                kind
                + orjson.dumps(lease["job_id"])
                + b',"lease_token":'
                + orjson.dumps(lease["lease_token"])
                + tail
                for lease in chunk
            )
            body = b'{"node_id":' + self._node + b',"outcomes":[' + outcomes + b"]}"
            response = await self.http.post(QUEUE_SUBMIT_PATH, content=body)
            if response.status_code != 200:
                raise RuntimeError(f"submit answered {response.status_code}: {response.text[:300]}")
            acks = orjson.loads(response.content)["acks"]
            accepted += sum(1 for ack in acks if ack["ack"] == "accepted")
        self.accepted += accepted
        return accepted

    async def work(self, stop: asyncio.Event, max_jobs: int, wait: float = 1.0) -> None:
        """Fetch and deliver until ``stop``; the next fetch overlaps the last delivery."""
        delivering: asyncio.Task[int] | None = None
        try:
            while not stop.is_set():
                leases = await self.fetch(max_jobs, wait)
                if delivering is not None:
                    await delivering
                    delivering = None
                if leases:
                    delivering = asyncio.create_task(self.deliver(leases))
        finally:
            if delivering is not None:
                await delivering

    async def aclose(self) -> None:
        """Close the pool."""
        await self.http.aclose()
