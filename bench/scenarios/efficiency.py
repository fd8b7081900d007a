"""Node efficiency: a node's throughput ÷ a bare LiteLLM loop's, same concurrency, same stand-in.

Both spend most of their CPU inside LiteLLM (~7-8 ms per call); the ratio is
what the node's own work (fetching, heartbeats, the spool, delivering)
costs on top.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from harness.figures import Figure, at_least
from openbeepboop_testkit.processes import run_command

from scenarios import Context
from scenarios.e2e import LLM_DELAY, _check, _throughput, start_nodes

CONCURRENCY = 16
BARE = Path(__file__).with_name("bare_litellm.py")


def run(ctx: Context) -> list[Figure]:
    """The bare loop first, then one node, against one stand-in."""
    calls = ctx.size(2000, 800)
    with ctx.cluster("efficiency") as cluster:
        standin = cluster.standin(LLM_DELAY)
        done = run_command(
            [
                sys.executable,
                str(BARE),
                "--api-base",
                standin.base_url,
                "--concurrency",
                str(CONCURRENCY),
                "--calls",
                str(calls),
            ],
            env=cluster.env,
            timeout=600,
        )
        bare = json.loads(done.stdout.strip().splitlines()[-1])
        bare_rate = bare["calls"] / bare["seconds"]
        standin.reset()
        server = cluster.server()
        server.start()
        (node,) = start_nodes(cluster, server, standin, 1, CONCURRENCY)
        meter = ctx.meter(
            "efficiency", {"server": server.pid, "node": node.pid, "standin": standin.pid}
        ).start()
        elapsed, counts = asyncio.run(_throughput(server, calls, "efficiency"))
        cpu = meter.stop()
        _check(counts, calls)
    node_rate = calls / elapsed
    return [
        Figure(
            "efficiency",
            f"node efficiency: node ÷ bare LiteLLM loop, concurrency {CONCURRENCY}",
            node_rate / bare_rate * 100,
            "%",
            at_least(90),
            bound=cpu.bound(),
            detail=(
                f"{calls} calls each, LLM delay {LLM_DELAY * 1e3:.0f} ms: bare loop "
                f"{bare_rate:.1f} calls/s, node {node_rate:.1f} jobs/s (submit → all terminal); "
                f"node CPU {cpu.per_item_ms('node', calls):.2f} ms per job; "
                f"CPU during the node run: {cpu.describe()}"
            ),
            extra={"bare": bare_rate, "node": node_rate},
        )
    ]
