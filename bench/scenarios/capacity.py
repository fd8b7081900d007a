"""Queue capacity: submit → claim → result with synthetic nodes (no LLM).

One client bulk-submits while two synthetic nodes fetch up to 256 leases per
request (long-polling) and deliver results in batches; the figure is jobs
whose result was accepted per second, from the first submit to the last ack.
"""

from __future__ import annotations

import asyncio
import time

from harness.api import UserApi, bulk_body
from harness.figures import Figure, at_least
from harness.synthetic import SyntheticNode

from scenarios import Context

NODES = 2
MAX_JOBS = 256
BATCH = 500


async def _measure(url: str, user_key: str, node_key: str, jobs: int) -> tuple[float, float]:
    api = UserApi(url, user_key)
    nodes = [SyntheticNode(url, node_key, f"synthetic-{i}") for i in range(NODES)]
    bodies = [bulk_body(i * BATCH, BATCH, "capacity") for i in range(jobs // BATCH)]
    stop = asyncio.Event()
    started = time.perf_counter()
    workers = [asyncio.create_task(node.work(stop, MAX_JOBS)) for node in nodes]
    for body in bodies:
        await api.bulk(body)
    submitted = time.perf_counter() - started
    while sum(node.accepted for node in nodes) < jobs:
        await asyncio.sleep(0.005)
        for worker in workers:
            if worker.done():
                worker.result()  # raises what stopped it
    elapsed = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*workers)
    await api.aclose()
    for node in nodes:
        await node.aclose()
    return elapsed, submitted


def run(ctx: Context) -> list[Figure]:
    """Submit ``jobs`` and have them all claimed and answered."""
    jobs = ctx.size(20_000, 10_000)
    with ctx.cluster("capacity") as cluster:
        server = cluster.server()
        server.start()
        # Warm-up: the first requests of a process pay for imports and caches.
        asyncio.run(_measure(server.url, server.user_key, server.node_key, BATCH))
        meter = ctx.meter("capacity", {"server": server.pid}).start()
        elapsed, submitted = asyncio.run(
            _measure(server.url, server.user_key, server.node_key, jobs)
        )
        cpu = meter.stop()
    return [
        Figure(
            "capacity",
            "queue capacity: submit → claim → result, synthetic nodes",
            jobs / elapsed,
            "jobs/s",
            at_least(2000),
            bound=cpu.bound(),
            detail=(
                f"{jobs} jobs, bulk submits of {BATCH}, {NODES} synthetic nodes fetching up to "
                f"{MAX_JOBS} leases per request and delivering in batches; all submitted after "
                f"{submitted:.2f} s, all answered after {elapsed:.2f} s;"
                f" server CPU {cpu.per_item_ms('server', jobs):.3f} ms per job; "
                f"CPU: {cpu.describe()}"
            ),
        )
    ]
