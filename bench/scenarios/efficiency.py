"""Node efficiency: a node's throughput ÷ a bare LiteLLM loop's, same concurrency, same stand-in.

Both spend most of their CPU inside LiteLLM (~7-8 ms per call); the ratio is
what the node's own work (fetching, heartbeats, the spool, delivering)
costs on top.
"""

from __future__ import annotations

import asyncio

from harness.api import request_counts, requests_per_item
from harness.figures import Figure, at_least

from scenarios import Context
from scenarios.e2e import LLM_DELAY, _check, _throughput, bare_rate, start_nodes

CONCURRENCY = 16


def run(ctx: Context) -> list[Figure]:
    """The bare loop, one node, the bare loop again, against one stand-in."""
    calls = ctx.size(2000, 800)
    with ctx.cluster("efficiency") as cluster:
        standin = cluster.standin(LLM_DELAY)
        bare_rates = [bare_rate(cluster, standin, calls, CONCURRENCY)]
        standin.reset()
        server = cluster.server()
        server.start()
        (node,) = start_nodes(cluster, server, standin, 1, CONCURRENCY)
        meter = ctx.meter(
            "efficiency", {"server": server.pid, "node": node.pid, "standin": standin.pid}
        ).start()
        requests_before = request_counts(server.url, server.admin_key)
        elapsed, counts = asyncio.run(_throughput(server, calls, "efficiency"))
        cpu = meter.stop()
        node_requests = requests_per_item(
            requests_before, request_counts(server.url, server.admin_key), calls
        )
        _check(counts, calls)
        # The bare loop again, idle node and server still up: the machine as it
        # was for the node run; the ratio uses the mean of both bare runs.
        bare_rates.append(bare_rate(cluster, standin, calls, CONCURRENCY))
    bare_mean = sum(bare_rates) / len(bare_rates)
    node_rate = calls / elapsed
    return [
        Figure(
            "efficiency",
            f"node efficiency: node ÷ bare LiteLLM loop, concurrency {CONCURRENCY}",
            node_rate / bare_mean * 100,
            "%",
            at_least(90),
            bound=cpu.bound(),
            detail=(
                f"{calls} calls each, LLM delay {LLM_DELAY * 1e3:.0f} ms: bare loop "
                f"{' and '.join(f'{rate:.1f}' for rate in bare_rates)} calls/s (before and "
                f"after), node {node_rate:.1f} jobs/s (submit → all terminal); "
                f"node CPU {cpu.per_item_ms('node', calls):.2f} ms per job; "
                f"node requests per job: {node_requests}; "
                f"CPU during the node run: {cpu.describe()}"
            ),
            extra={"bare": bare_mean, "node": node_rate},
        )
    ]
