"""Queue capacity: submit → claim → result with synthetic nodes (no LLM).

One client bulk-submits while two synthetic nodes fetch up to 256 leases per
request (long-polling) and deliver results in batches; the figure is jobs
whose result was accepted per second, from the first submit to the last ack.

``capacityfair`` runs the same with the bulk submits spread over 100 owners
(USER keys), so every claim shares its 256 leases out between the owners with
queued jobs (docs/api.md, "Claim order"), and the same run with one owner and
the same bulk size in turn, for the ratio.
"""

from __future__ import annotations

import asyncio
import time

from harness.api import UserApi, bulk_body
from harness.figures import Figure, at_least
from harness.owners import make_owner_keys
from harness.synthetic import SyntheticNode

from scenarios import Context

NODES = 2
MAX_JOBS = 256
BATCH = 500


async def _measure(
    url: str, user_keys: list[str], node_key: str, jobs: int, batch: int = BATCH
) -> tuple[float, float]:
    """Bulk bodies of ``batch`` go to the ``user_keys`` in turn; (all answered, all submitted)."""
    apis = [UserApi(url, key) for key in user_keys]
    nodes = [SyntheticNode(url, node_key, f"synthetic-{i}") for i in range(NODES)]
    bodies = [bulk_body(i * batch, batch, "capacity") for i in range(jobs // batch)]
    stop = asyncio.Event()
    started = time.perf_counter()
    workers = [asyncio.create_task(node.work(stop, MAX_JOBS)) for node in nodes]
    for index, body in enumerate(bodies):
        await apis[index % len(apis)].bulk(body)
    submitted = time.perf_counter() - started
    while sum(node.accepted for node in nodes) < jobs:
        await asyncio.sleep(0.005)
        for worker in workers:
            if worker.done():
                worker.result()  # raises what stopped it
    elapsed = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*workers)
    for api in apis:
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
        asyncio.run(_measure(server.url, [server.user_key], server.node_key, BATCH))
        meter = ctx.meter("capacity", {"server": server.pid}).start()
        elapsed, submitted = asyncio.run(
            _measure(server.url, [server.user_key], server.node_key, jobs)
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


#: Owners with queued jobs in ``capacityfair``; each bulk body is one owner's.
FAIR_OWNERS = 100


def run_fair(ctx: Context) -> list[Figure]:
    """One owner, then 100 owners (fresh servers, same bulk size), in turn."""
    jobs = ctx.size(20_000, 10_000)
    batch = jobs // FAIR_OWNERS
    rates: dict[int, float] = {}
    details: dict[int, str] = {}
    for owners in (1, FAIR_OWNERS):
        with ctx.cluster(f"capacity-{owners}") as cluster:
            server = cluster.server()
            keys = [server.user_key] if owners == 1 else make_owner_keys(server, owners)
            server.start()
            asyncio.run(_measure(server.url, keys, server.node_key, batch * len(keys), batch))
            meter = ctx.meter(f"capacity-{owners}", {"server": server.pid}).start()
            elapsed, submitted = asyncio.run(
                _measure(server.url, keys, server.node_key, jobs, batch)
            )
            cpu = meter.stop()
        rates[owners] = jobs / elapsed
        details[owners] = (
            f"{owners} owner(s): {rates[owners]:.0f} jobs/s, all submitted after "
            f"{submitted:.2f} s, answered after {elapsed:.2f} s, server CPU "
            f"{cpu.per_item_ms('server', jobs):.3f} ms per job"
        )
    shape = (
        f"{jobs} jobs in bulk submits of {batch}, {NODES} synthetic nodes fetching up to "
        f"{MAX_JOBS} leases per request"
    )
    return [
        Figure(
            "capacity_fair",
            f"queue capacity with fair share, {FAIR_OWNERS} owners with queued jobs",
            rates[FAIR_OWNERS],
            "jobs/s",
            at_least(2000),
            detail=f"{shape}; {details[FAIR_OWNERS]}",
        ),
        Figure(
            "capacity_fair_ratio",
            f"queue capacity, {FAIR_OWNERS} owners ÷ 1 owner (same bulk size)",
            rates[FAIR_OWNERS] / rates[1],
            "x",
            at_least(0.9),
            detail=f"{shape}; {details[1]}; {details[FAIR_OWNERS]}",
        ),
    ]
