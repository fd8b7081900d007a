"""Pickup latency: an idle node long-polling; one job submitted; how soon the node holds it.

Two ways, both timed from the moment the harness starts the submit:

* the figure: a synthetic node in the harness's own event loop, stamped the
  moment its fetch returns the lease (not after the harness has also parsed
  its own ``202``): the queue's pickup, with no process of its own to wake;
* (info) a node in its own process (:mod:`harness.idle_node`, the node's own
  queue client on aiohttp), stamped when the lease arrives there
  (``perf_counter`` is CLOCK_MONOTONIC, one clock for both processes). On
  this 2-core machine that adds waking an idle process on the other core.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from harness.api import UserApi, submit_body
from harness.figures import Figure, at_most, median, percentile
from harness.synthetic import SyntheticNode

from scenarios import Context

#: Pause between the node's fetch and the submit, so the node is parked in its long-poll.
GAP_SECONDS = 0.05
#: Where ``python -m harness.idle_node`` is found.
BENCH_DIR = Path(__file__).resolve().parent.parent
#: No step of one sample may take longer than this (the node's fetch waits 30 s).
STEP_TIMEOUT = 60.0


async def _in_process(url: str, user_key: str, node_key: str, count: int) -> list[float]:
    api = UserApi(url, user_key)
    node = SyntheticNode(url, node_key, "synthetic-idle")

    async def fetch_stamped() -> tuple[list[dict[str, object]], float]:
        leases = await node.fetch(1, 30.0)
        return leases, time.perf_counter()

    latencies: list[float] = []
    try:
        for index in range(count):
            fetch = asyncio.create_task(fetch_stamped())
            await asyncio.sleep(GAP_SECONDS)  # the fetch is now parked on the server
            if fetch.done():
                raise RuntimeError(f"the idle fetch returned early: {fetch.result()}")
            sent = time.perf_counter()
            job_id = await api.submit(submit_body(index, "pickup"))
            leases, arrived = await fetch
            if [lease["job_id"] for lease in leases] != [job_id]:
                raise RuntimeError(f"expected a lease for {job_id}, got {leases}")
            latencies.append(arrived - sent)
            await node.deliver(leases)
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
        asyncio.run(_own_process(*urls, 10))
        own = asyncio.run(_own_process(*urls, count))
    p50, p99 = median(latencies) * 1e3, percentile(latencies, 99) * 1e3
    detail = (
        f"{count} samples, one synthetic node in a 30 s long-poll (max_jobs 1), submit sent "
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
