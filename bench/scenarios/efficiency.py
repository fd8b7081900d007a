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

Both sides are timed the same way, by the stand-in: the rate at which
calls reach it over the middle 80 % of a run. A whole run also times how
the pipeline fills and drains, which is not the rate a node sustains: the
bare loop's 16 first calls all wait 20 ms, and a node's run adds the bulk
insert of every job before the first lease, the last result's delivery and
the user's sweep over every id (together ~100 ms of a ~4.5 s run here,
pickup and one-job latency have figures of their own). The whole-run rates
and their ratios are in the detail too.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from harness.api import request_counts, requests_per_item
from harness.cluster import STEADY_TRIM
from harness.cpu import CpuShare
from harness.figures import Figure, at_least, median

from scenarios import Context
from scenarios.e2e import LLM_DELAY, BareLoop, _check, _throughput, start_nodes

CONCURRENCY = 16
#: Node runs, each between two bare runs (odd: the median is one of them).
ROUNDS = 7


def run(ctx: Context) -> list[Figure]:
    """Bare loop and node in turn against one stand-in; the node idles during bare runs."""
    calls = ctx.size(600, 300)
    bare_runs: list[Rates] = []
    node_runs: list[Rates] = []
    cpus: list[CpuShare] = []
    bare_ms: list[float] = []
    with ctx.cluster("efficiency") as cluster:
        standin = cluster.standin(LLM_DELAY)
        server = cluster.server()
        server.start()
        (node,) = start_nodes(cluster, server, standin, 1, CONCURRENCY)
        pids = {"server": server.pid, "node": node.pid, "standin": standin.pid}
        with BareLoop(cluster, standin, CONCURRENCY) as loop:

            def bare() -> None:
                meter = ctx.meter(f"efficiency-bare-{len(bare_runs) + 1}", {"bare": loop.pid})
                meter.start()
                whole = loop.rate(calls)
                bare_ms.append(meter.stop().per_item_ms("bare", calls))
                bare_runs.append(Rates(standin.steady_rate(calls), whole))

            bare()
            requests_before = request_counts(server.url, server.admin_key)
            for round_ in range(ROUNDS):
                name = "efficiency" if round_ == 0 else f"efficiency-{round_ + 1}"
                standin.reset()
                meter = ctx.meter(name, pids).start()
                elapsed, counts = asyncio.run(_throughput(server, calls, f"efficiency{round_}"))
                cpus.append(meter.stop())
                _check(counts, calls)
                node_runs.append(Rates(standin.steady_rate(calls), calls / elapsed))
                bare()
        node_requests = requests_per_item(
            requests_before, request_counts(server.url, server.admin_key), calls * ROUNDS
        )
    bare_steady, bare_whole = [run.steady for run in bare_runs], [run.whole for run in bare_runs]
    node_steady, node_whole = [run.steady for run in node_runs], [run.whole for run in node_runs]
    ratios = _ratios(node_steady, bare_steady)
    whole_ratios = _ratios(node_whole, bare_whole)
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
                f"{calls} calls, LLM delay {LLM_DELAY * 1e3:.0f} ms; steady rates (calls "
                f"reaching the stand-in, middle {100 - 2 * STEADY_TRIM * 100:.0f} % of each "
                f"run): bare loop {_list(bare_steady)} calls/s, node "
                f"{_list(node_steady)} jobs/s, median of the ratios "
                f"{_list([ratio * 100 for ratio in ratios], '.1f')} %; whole runs (bare: its "
                f"own clock; node: first submit → all terminal as the user sees it): bare "
                f"{_list(bare_whole)}, node {_list(node_whole)}, ratios "
                f"{_list([ratio * 100 for ratio in whole_ratios], '.1f')} %; CPU per call: "
                f"node {_list(node_ms, '.2f')} ms, bare loop {_list(bare_ms, '.2f')} ms; "
                f"node requests per job: {node_requests}; "
                f"CPU during the median node run: {cpu.describe()}"
            ),
            extra={
                "bare": median(bare_steady),
                "node": median(node_steady),
                "whole_ratio": median(whole_ratios),
            },
        )
    ]


@dataclass(frozen=True)
class Rates:
    """One run's rate two ways: steady (the stand-in's clock) and over the whole run."""

    steady: float
    whole: float


def _ratios(node: list[float], bare: list[float]) -> list[float]:
    """Each node run against the mean of the bare runs either side of it."""
    around = itertools.pairwise(bare)
    return [
        rate / ((before + after) / 2) for rate, (before, after) in zip(node, around, strict=True)
    ]


def _list(values: Iterable[float], spec: str = ".0f") -> str:
    return ", ".join(format(value, spec) for value in values)
