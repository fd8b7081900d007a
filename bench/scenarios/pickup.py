"""Pickup latency: an idle node long-polling; one job submitted; how soon it holds the lease."""

from __future__ import annotations

import asyncio
import time

from harness.api import UserApi, submit_body
from harness.figures import Figure, at_most, median, percentile
from harness.synthetic import SyntheticNode

from scenarios import Context

#: Pause between samples so the node is back in its long-poll, idle.
GAP_SECONDS = 0.05


async def _samples(url: str, user_key: str, node_key: str, count: int) -> list[float]:
    api = UserApi(url, user_key)
    node = SyntheticNode(url, node_key, "synthetic-idle")
    latencies: list[float] = []
    try:
        for index in range(count):
            fetch = asyncio.create_task(node.fetch(1, 30.0))
            await asyncio.sleep(GAP_SECONDS)  # the fetch is now waiting on the server
            if fetch.done():
                raise RuntimeError(f"the idle fetch returned early: {fetch.result()}")
            sent = time.perf_counter()
            await api.submit(submit_body(index, "pickup"))
            leases = await fetch
            latencies.append(time.perf_counter() - sent)
            if len(leases) != 1:
                raise RuntimeError(f"expected one lease, got {leases}")
            await node.deliver(leases)
    finally:
        await api.aclose()
        await node.aclose()
    return latencies


def run(ctx: Context) -> list[Figure]:
    """Submit → leased, measured on the harness's clock (both ends are its own)."""
    count = ctx.size(300, 100)
    with ctx.cluster("pickup") as cluster:
        server = cluster.server()
        server.start()
        asyncio.run(_samples(server.url, server.user_key, server.node_key, 10))  # warm-up
        meter = ctx.meter("pickup", {"server": server.pid}).start()
        latencies = asyncio.run(_samples(server.url, server.user_key, server.node_key, count))
        cpu = meter.stop()
    p50, p99 = median(latencies) * 1e3, percentile(latencies, 99) * 1e3
    detail = (
        f"{count} samples, one synthetic node in a 30 s long-poll (max_jobs 1), submit sent "
        f"{GAP_SECONDS * 1e3:.0f} ms after the fetch; max {max(latencies) * 1e3:.1f} ms; "
        f"CPU: {cpu.describe()}"
    )
    chain = "submit round trip + wake-up + claim"
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
    ]
