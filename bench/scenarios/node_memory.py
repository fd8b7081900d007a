"""A node's resident memory when idle (LiteLLM imported, one job done, long-polling)."""

from __future__ import annotations

import asyncio
import time

from harness.cpu import peak_rss_mb, rss_mb
from harness.figures import Figure, at_most

from scenarios import Context
from scenarios.e2e import LLM_DELAY, _throughput, start_nodes

CONCURRENCY = 4
SETTLE_SECONDS = 2.0


def run(ctx: Context) -> list[Figure]:
    """Start a node, give it a little work, let it go idle, read /proc."""
    with ctx.cluster("node-memory") as cluster:
        server = cluster.server()
        server.start()
        standin = cluster.standin(LLM_DELAY)
        (node,) = start_nodes(cluster, server, standin, 1, CONCURRENCY)
        asyncio.run(_throughput(server, 100, "memory"))
        # Idle means: nothing in flight, the node sitting in its long-poll.
        time.sleep(SETTLE_SECONDS)
        rss, peak = rss_mb(node.pid), peak_rss_mb(node.pid)
    return [
        Figure(
            "node_rss",
            "node resident memory, idle",
            rss,
            "MB",
            at_most(300),
            bound="LiteLLM's import (most of it)",
            detail=(
                f"concurrency {CONCURRENCY}, after its warm-up and 100 jobs, idle "
                f"{SETTLE_SECONDS:.0f} s; "
                f"peak (VmHWM) {peak:.0f} MB"
            ),
        )
    ]
