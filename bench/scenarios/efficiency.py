"""Node efficiency: a node's throughput ÷ a bare LiteLLM loop's, same concurrency, same stand-in.

Both spend most of their CPU inside LiteLLM (~5-7 ms per call); the ratio is
what the node's own work (fetching, heartbeats, the spool, delivering)
costs on top.

Either side's rate moves by 10-25 % from one run to the next on this shared
VM (the bare loop alone has measured 156 and 219 calls/s a minute apart), so
a single pair of runs cannot tell a 5 % change. The runs alternate instead,
bare, node, bare, node, ..., bare, and each node run is compared with the
mean of the bare runs either side of it; the figure is the median of those
ratios, and every rate is in the detail.
"""

from __future__ import annotations

import asyncio
import itertools

from harness.api import request_counts, requests_per_item
from harness.cpu import CpuShare
from harness.figures import Figure, at_least, median

from scenarios import Context
from scenarios.e2e import LLM_DELAY, _check, _throughput, bare_rate, start_nodes

CONCURRENCY = 16
#: Node runs, each between two bare runs (odd: the median is one of them).
ROUNDS = 3


def run(ctx: Context) -> list[Figure]:
    """Bare loop and node in turn against one stand-in; the node idles during bare runs."""
    calls = ctx.size(1000, 400)
    node_rates: list[float] = []
    cpus: list[CpuShare] = []
    with ctx.cluster("efficiency") as cluster:
        standin = cluster.standin(LLM_DELAY)
        server = cluster.server()
        server.start()
        (node,) = start_nodes(cluster, server, standin, 1, CONCURRENCY)
        pids = {"server": server.pid, "node": node.pid, "standin": standin.pid}
        bare_rates = [bare_rate(cluster, standin, calls, CONCURRENCY)]
        requests_before = request_counts(server.url, server.admin_key)
        for round_ in range(ROUNDS):
            name = "efficiency" if round_ == 0 else f"efficiency-{round_ + 1}"
            meter = ctx.meter(name, pids).start()
            elapsed, counts = asyncio.run(_throughput(server, calls, f"efficiency{round_}"))
            cpus.append(meter.stop())
            _check(counts, calls)
            standin.reset()
            node_rates.append(calls / elapsed)
            bare_rates.append(bare_rate(cluster, standin, calls, CONCURRENCY))
        node_requests = requests_per_item(
            requests_before, request_counts(server.url, server.admin_key), calls * ROUNDS
        )
    around = itertools.pairwise(bare_rates)
    ratios = [
        rate / ((before + after) / 2)
        for rate, (before, after) in zip(node_rates, around, strict=True)
    ]
    cpu = cpus[ratios.index(median(ratios))]
    node_ms = [share.per_item_ms("node", calls) for share in cpus]
    return [
        Figure(
            "efficiency",
            f"node efficiency: node ÷ bare LiteLLM loop, concurrency {CONCURRENCY}",
            median(ratios) * 100,
            "%",
            at_least(90),
            bound=cpu.bound(),
            detail=(
                f"{ROUNDS} node runs of {calls} jobs, each between two bare-loop runs of "
                f"{calls} calls, LLM delay {LLM_DELAY * 1e3:.0f} ms; median of the ratios "
                f"{', '.join(f'{ratio * 100:.1f}' for ratio in ratios)} %; bare loop "
                f"{', '.join(f'{rate:.0f}' for rate in bare_rates)} calls/s; node "
                f"{', '.join(f'{rate:.0f}' for rate in node_rates)} jobs/s (submit → all "
                f"terminal); node CPU {', '.join(f'{ms:.2f}' for ms in node_ms)} ms per job; "
                f"node requests per job: {node_requests}; CPU during the median node run: "
                f"{cpu.describe()}"
            ),
            extra={"bare": sum(bare_rates) / len(bare_rates), "node": median(node_rates)},
        )
    ]
