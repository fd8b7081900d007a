"""The HTTP API from the outside, with as little harness CPU per request as possible.

The harness shares two cores with what it measures, so bodies are built once
(before the clock starts) with orjson and answers are parsed with orjson, not
with pydantic models. Bodies and paths follow the wire contract (docs/api.md,
``openbeepboop_schemas``); the harness never reaches into the server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
from openbeepboop_schemas import (
    BULK_SUBMIT_PATH,
    CHAT_COMPLETIONS_PATH,
    FETCH_PATH,
    HEARTBEAT_PATH,
    METRICS_PATH,
    POLL_PATH,
    QUEUE_SUBMIT_PATH,
    TERMINAL_STATUSES,
)

from harness.cluster import MODEL

TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)
#: The routes nodes call, as ``/metrics`` labels them.
NODE_ROUTES = (FETCH_PATH, QUEUE_SUBMIT_PATH, HEARTBEAT_PATH)
#: Ids per poll (the contract allows 1,000).
POLL_CHUNK = 1000
#: Long-poll wait the harness uses (under the 30 s cap).
WAIT_SECONDS = 20.0
#: Read timeout above the longest long-poll (30 s).
TIMEOUT = httpx.Timeout(60.0)


def chat_request(index: int, tag: str = "bench") -> dict[str, Any]:
    """One small chat completion request (a distinct prompt per index)."""
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"{tag} prompt number {index}"}],
        "max_tokens": 16,
    }


def submit_body(index: int, tag: str = "bench") -> bytes:
    """``POST /v1/chat/completions`` body."""
    return orjson.dumps(chat_request(index, tag))


def bulk_body(start: int, count: int, tag: str = "bench") -> bytes:
    """A bulk submit body of ``count`` requests."""
    return orjson.dumps({"requests": [chat_request(i, tag) for i in range(start, start + count)]})


def headers(key: str) -> dict[str, str]:
    """Bearer auth and a JSON content type."""
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:300]}"
        )
    return orjson.loads(response.content)


class UserApi:
    """A USER key's calls on one keep-alive async connection pool."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.AsyncClient(base_url=url, headers=headers(key), timeout=TIMEOUT)

    async def submit(self, body: bytes) -> str:
        """One job; its id."""
        job: dict[str, Any] = _ok(await self.http.post(CHAT_COMPLETIONS_PATH, content=body))
        return str(job["id"])

    async def bulk(self, body: bytes) -> list[str]:
        """Many jobs in one call; their ids."""
        answer = _ok(await self.http.post(BULK_SUBMIT_PATH, content=body))
        return [job["id"] for job in answer["data"]]

    async def poll(self, ids: list[str], wait: float | None = None) -> list[dict[str, Any]]:
        """Poll entries, optionally long-polling."""
        body: dict[str, Any] = {"ids": ids}
        if wait:
            body["wait"] = wait
        entries: list[dict[str, Any]] = _ok(
            await self.http.post(POLL_PATH, content=orjson.dumps(body))
        )
        return entries

    async def aclose(self) -> None:
        """Close the pool."""
        await self.http.aclose()


async def wait_all_terminal(api: UserApi, ids: list[str], timeout: float) -> dict[str, int]:
    """Wait until every job is terminal, loading the server as little as possible; counts.

    Jobs are claimed in FIFO order, so the last one submitted is (nearly) the
    last to finish: one long-poll on it, then one sweep over all of them for
    the few still in flight. Polling thousands of ids in a loop would cost the
    server more than the work being measured.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = list(ids)
    watch = pending[-1:]
    counts: dict[str, int] = {}
    while pending:
        if loop.time() > deadline:
            raise TimeoutError(f"{len(pending)} of {len(ids)} jobs not terminal after {timeout}s")
        if watch:
            entries = await api.poll(watch, wait=WAIT_SECONDS)
            if any(entry["status"] not in TERMINAL for entry in entries):
                continue
            watch = []
        still: list[str] = []
        for start in range(0, len(pending), POLL_CHUNK):
            batch = pending[start : start + POLL_CHUNK]
            for entry in await api.poll(batch):
                if entry["status"] in TERMINAL:
                    counts[entry["status"]] = counts.get(entry["status"], 0) + 1
                else:
                    still.append(entry["id"])
        pending = still
        watch = pending[-1:]
    return counts


#: The server's request histogram (``GET /metrics``): one ``_count`` line per route.
REQUEST_COUNT_METRIC = "openbeepboop_http_request_duration_seconds_count"


def request_counts(url: str, admin_key: str) -> dict[str, int]:
    """Requests the server has answered so far, by route (from ``GET /metrics``).

    Scraped before and after a measured window, the difference says how many
    round trips the nodes made per job, the node's main cost besides LiteLLM.
    """
    response = httpx.get(f"{url}{METRICS_PATH}", headers=headers(admin_key), timeout=TIMEOUT)
    response.raise_for_status()
    counts: dict[str, int] = {}
    for line in response.text.splitlines():
        if not line.startswith(REQUEST_COUNT_METRIC + "{"):
            continue
        labels, _, value = line[len(REQUEST_COUNT_METRIC) + 1 :].rpartition("} ")
        route = dict(part.split("=", 1) for part in labels.split(","))["route"].strip('"')
        counts[route] = counts.get(route, 0) + int(float(value))
    return counts


def requests_per_item(before: dict[str, int], after: dict[str, int], items: int) -> str:
    """``fetch 0.41, submit 0.12, …`` per item for the node routes that moved."""
    moved = {
        route.rsplit("/", 1)[-1]: (after[route] - before.get(route, 0)) / items
        for route in sorted(after)
        if route in NODE_ROUTES and after[route] > before.get(route, 0)
    }
    return ", ".join(f"{name} {share:.2f}" for name, share in moved.items()) or "none"
