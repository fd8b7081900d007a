"""Bulk submit: many requests per call, one transaction each."""

from __future__ import annotations

import time

import httpx
from harness.api import TIMEOUT, bulk_body, headers
from harness.figures import Figure, at_least
from openbeepboop_schemas import BULK_SUBMIT_PATH

from scenarios import Context

#: Requests per call (the contract allows up to 5,000).
BATCH = 1000


def run(ctx: Context) -> list[Figure]:
    """Sequential bulk submits of ``BATCH`` requests from one client."""
    calls = ctx.size(50, 20)
    with ctx.cluster("bulk") as cluster:
        server = cluster.server()
        server.start()
        bodies = [bulk_body(i * BATCH, BATCH) for i in range(calls + 1)]
        with httpx.Client(
            base_url=server.url, headers=headers(server.user_key), timeout=TIMEOUT
        ) as http:
            http.post(BULK_SUBMIT_PATH, content=bodies[0]).raise_for_status()  # warm-up
            meter = ctx.meter("bulk", {"server": server.pid}).start()
            started = time.perf_counter()
            for body in bodies[1:]:
                response = http.post(BULK_SUBMIT_PATH, content=body)
                if response.status_code != 202:
                    raise RuntimeError(f"bulk answered {response.status_code}: {response.text}")
            elapsed = time.perf_counter() - started
            cpu = meter.stop()
    jobs = calls * BATCH
    return [
        Figure(
            "bulk",
            "bulk submit",
            jobs / elapsed,
            "jobs/s",
            at_least(10_000),
            bound=cpu.bound(),
            detail=(
                f"{calls} sequential calls of {BATCH} requests ({jobs} jobs) in {elapsed:.2f} s, "
                f"{elapsed / calls * 1e3:.0f} ms per call;"
                f" server CPU {cpu.per_item_ms('server', jobs):.3f} ms per job; "
                f"CPU: {cpu.describe()}"
            ),
        )
    ]
