"""Pickup latency: an idle node long-polling; one job submitted; how soon the node holds it.

Three ways, all timed from the moment the harness starts the submit:

* the figure: the node's own queue client (aiohttp, what ``openbeepboop-node
  run`` fetches with) in the harness's event loop, stamped the moment its
  fetch returns the lease (not after the harness has also parsed its own
  ``202``): the queue's pickup, with no process of its own to wake;
* (info) the same with the harness's httpx synthetic node, which was the
  figure until 2026-12-02: httpx costs the caller more CPU per request
  than aiohttp, about 1 ms of this figure on the bench machine
  (docs/performance.md, "How pickup is timed"), and no node fetches with it;
* (info) a node in its own process (:mod:`harness.idle_node`), stamped when
  the lease arrives there (``perf_counter`` is CLOCK_MONOTONIC, one clock
  for both processes). On this 2-core machine that adds waking an idle
  process on the other core.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from harness.api import UserApi, submit_body
from harness.figures import Figure, at_most, median, percentile
from harness.idle_node import IdleNode
from harness.synthetic import SyntheticNode

from scenarios import Context

#: Pause between the node's fetch and the submit, so the node is parked in its long-poll.
GAP_SECONDS = 0.05
#: Where ``python -m harness.idle_node`` is found.
BENCH_DIR = Path(__file__).resolve().parent.parent
#: No step of one sample may take longer than this (the node's fetch waits 30 s).
STEP_TIMEOUT = 60.0


class _Fetcher(Protocol):
    """One idle node in the harness's loop: fetch one job (its ids), answer it, close."""

    async def fetch(self) -> list[str]: ...
    async def answer(self) -> None: ...
    async def aclose(self) -> None: ...


class _HttpxSynthetic:
    """The harness's httpx synthetic node as a :class:`_Fetcher` (the figure until 2026-12-02)."""

    def __init__(self, url: str, key: str) -> None:
        self._node = SyntheticNode(url, key, "synthetic-idle")
        self._leases: list[dict[str, Any]] = []

    async def fetch(self) -> list[str]:
        self._leases = await self._node.fetch(1, 30.0)
        return [str(lease["job_id"]) for lease in self._leases]

    async def answer(self) -> None:
        await self._node.deliver(self._leases)

    async def aclose(self) -> None:
        await self._node.aclose()


def _node_client(url: str, key: str) -> _Fetcher:
    return IdleNode(url, key, "node-client-idle")


async def _in_process(
    url: str,
    user_key: str,
    node_key: str,
    count: int,
    make: Callable[[str, str], _Fetcher] = _node_client,
) -> list[float]:
    api = UserApi(url, user_key)
    node = make(url, node_key)

    async def fetch_stamped() -> tuple[list[str], float]:
        job_ids = await node.fetch()
        return job_ids, time.perf_counter()

    latencies: list[float] = []
    try:
        for index in range(count):
            fetch = asyncio.create_task(fetch_stamped())
            await asyncio.sleep(GAP_SECONDS)  # the fetch is now parked on the server
            if fetch.done():
                raise RuntimeError(f"the idle fetch returned early: {fetch.result()}")
            sent = time.perf_counter()
            job_id = await api.submit(submit_body(index, "pickup"))
            leased, arrived = await fetch
            if leased != [job_id]:
                raise RuntimeError(f"expected a lease for {job_id}, got {leased}")
            latencies.append(arrived - sent)
            await node.answer()
    finally:
        await api.aclose()
        await node.aclose()
    return latencies


async def _line(stream: asyncio.StreamReader) -> list[str]:
    raw = await asyncio.wait_for(stream.readline(), STEP_TIMEOUT)
    if not raw:
        raise RuntimeError("the idle node exited (see its stderr above)")
    return raw.decode().split()


async def _own_process(url: str, user_key: str, node_key: str, count: int) -> list[float]:
    api = UserApi(url, user_key)
    node = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harness.idle_node",
        url,
        node_key,
        "idle-node",
        cwd=BENCH_DIR,
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert node.stdout is not None
    latencies: list[float] = []
    try:
        for index in range(count):
            if await _line(node.stdout) != ["fetching"]:
                raise RuntimeError("the idle node did not start a fetch")
            await asyncio.sleep(GAP_SECONDS)
            sent = time.perf_counter()
            job_id = await api.submit(submit_body(index, "pickup"))
            word, arrived, leased = await _line(node.stdout)
            if word != "leased" or leased != job_id:
                raise RuntimeError(f"expected a lease for {job_id}, the node said {word} {leased}")
            latencies.append(float(arrived) - sent)
    finally:
        await api.aclose()
        if node.returncode is None:
            node.terminate()
        await node.wait()
    return latencies


def run(ctx: Context) -> list[Figure]:
    """Submit -> leased, the two ways (warm-up first, then the figure, then the info row)."""
    count = ctx.size(300, 100)
    with ctx.cluster("pickup") as cluster:
        server = cluster.server()
        server.start()
        urls = (server.url, server.user_key, server.node_key)
        asyncio.run(_in_process(*urls, 10))  # warm-up
        meter = ctx.meter("pickup", {"server": server.pid}).start()
        latencies = asyncio.run(_in_process(*urls, count))
        cpu = meter.stop()
        asyncio.run(_in_process(*urls, 10, _HttpxSynthetic))
        synthetic = asyncio.run(_in_process(*urls, count, _HttpxSynthetic))
        asyncio.run(_own_process(*urls, 10))
        own = asyncio.run(_own_process(*urls, count))
    p50, p99 = median(latencies) * 1e3, percentile(latencies, 99) * 1e3
    detail = (
        f"{count} samples, the node's queue client (aiohttp) in the harness's loop, in a 30 s "
        f"long-poll (max_jobs 1), submit sent "
        f"{GAP_SECONDS * 1e3:.0f} ms after the fetch, stamped when the fetch returns; max "
        f"{max(latencies) * 1e3:.1f} ms; CPU: {cpu.describe()}"
    )
    chain = "submit + hand-off to the parked fetch (one transaction) + lease answer"
    return [
        Figure(
            "pickup_p50",
            "pickup latency, idle long-polling node, p50",
            p50,
            "ms",
            at_most(5),
            bound=chain,
            detail=detail,
        ),
        Figure(
            "pickup_p99",
            "pickup latency, idle long-polling node, p99",
            p99,
            "ms",
            at_most(50),
            bound=chain,
        ),
        Figure(
            "pickup_httpx_synthetic",
            "pickup latency, the harness's httpx node, p50 (info)",
            median(synthetic) * 1e3,
            "ms",
            None,
            bound=chain + " + httpx's CPU in the harness",
            detail=(
                f"{count} samples, the figure until 2026-12-02 (docs/performance.md, "
                f'"How pickup is timed"); p99 {percentile(synthetic, 99) * 1e3:.1f} ms'
            ),
        ),
        Figure(
            "pickup_own_process",
            "pickup latency, node in its own process, p50 (info)",
            median(own) * 1e3,
            "ms",
            None,
            bound=chain + " + waking the node's process",
            detail=(
                f"{count} samples, the node's queue client (aiohttp) in its own process, "
                f"stamped when the lease arrives there; p99 {percentile(own, 99) * 1e3:.1f} ms, "
                f"max {max(own) * 1e3:.1f} ms"
            ),
        ),
    ]
