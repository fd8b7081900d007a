"""Single submits: one keep-alive client, one job per request, one after another."""

from __future__ import annotations

import time

import httpx
from harness.api import SUBMIT_PATH, TIMEOUT, headers, submit_body
from harness.figures import Figure, at_least, median, percentile

from scenarios import Context

WARMUP = 50


def run(ctx: Context) -> list[Figure]:
    """``POST /v1/chat/completions`` in a loop on one connection."""
    count = ctx.size(3000, 1000)
    with ctx.cluster("submit") as cluster:
        server = cluster.server()
        server.start()
        bodies = [submit_body(i) for i in range(count + WARMUP)]
        latencies: list[float] = []
        with httpx.Client(
            base_url=server.url, headers=headers(server.user_key), timeout=TIMEOUT
        ) as http:
            for body in bodies[:WARMUP]:
                http.post(SUBMIT_PATH, content=body).raise_for_status()
            meter = ctx.meter("submit", {"server": server.pid}).start()
            started = time.perf_counter()
            for body in bodies[WARMUP:]:
                sent = time.perf_counter()
                response = http.post(SUBMIT_PATH, content=body)
                latencies.append(time.perf_counter() - sent)
                if response.status_code != 202:
                    raise RuntimeError(f"submit answered {response.status_code}: {response.text}")
            elapsed = time.perf_counter() - started
            cpu = meter.stop()
    rate = count / elapsed
    return [
        Figure(
            "submit",
            "single submits, one keep-alive client",
            rate,
            "jobs/s",
            at_least(800),
            bound=cpu.bound("round trip per request"),
            detail=(
                f"{count} sequential requests (httpx, keep-alive) in {elapsed:.2f} s; "
                f"latency p50 {median(latencies) * 1e3:.2f} ms, "
                f"p99 {percentile(latencies, 99) * 1e3:.2f} ms;"
                f" server CPU {cpu.per_item_ms('server', count):.3f} ms per job; "
                f"CPU: {cpu.describe()}"
            ),
        )
    ]
