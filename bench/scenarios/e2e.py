"""End to end with real nodes, LiteLLM and the stand-in LLM answering after 20 ms.

Jobs go in through the bulk endpoint, real ``openbeepboop-node run`` processes
take them, call the stand-in through LiteLLM and deliver; the figure is jobs
per second from the first submit until the user sees every job terminal.
Nodes are warmed up first (LiteLLM imported, first call made) and idle in
their long-poll when the clock starts.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from harness.api import UserApi, bulk_body, submit_body, wait_all_terminal
from harness.cluster import Cluster, Node, Server, Standin
from harness.figures import Figure, at_least, at_most, median, percentile
from openbeepboop_testkit.processes import run_command, wait_until

from scenarios import Context

LLM_DELAY = 0.02
BATCH = 1000
#: Pause between single-job samples: the node is back in its long-poll.
GAP_SECONDS = 0.1
JOB_TIMEOUT = 600.0
BARE = Path(__file__).with_name("bare_litellm.py")


async def _throughput(server: Server, jobs: int, tag: str) -> tuple[float, dict[str, int]]:
    api = UserApi(server.url, server.user_key)
    try:
        started = time.perf_counter()
        ids: list[str] = []
        for start in range(0, jobs, BATCH):
            ids += await api.bulk(bulk_body(start, min(BATCH, jobs - start), tag))
        counts = await wait_all_terminal(api, ids, JOB_TIMEOUT)
        return time.perf_counter() - started, counts
    finally:
        await api.aclose()


async def _single(server: Server, count: int) -> list[float]:
    api = UserApi(server.url, server.user_key)
    latencies: list[float] = []
    try:
        for index in range(count):
            await asyncio.sleep(GAP_SECONDS)
            sent = time.perf_counter()
            job_id = await api.submit(submit_body(index, "single"))
            while True:
                (entry,) = await api.poll([job_id], wait=20.0)
                if entry["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                    break
            latencies.append(time.perf_counter() - sent)
            if entry["status"] != "COMPLETED":
                raise RuntimeError(f"job {job_id} ended {entry['status']}: {entry['error']}")
    finally:
        await api.aclose()
    return latencies


def start_nodes(
    cluster: Cluster, server: Server, standin: Standin, count: int, concurrency: int
) -> list[Node]:
    """Start nodes and run warm-up jobs until every node has completed one."""
    nodes = [cluster.node(server, standin, f"node-{i + 1}", concurrency) for i in range(count)]
    round_ = 0

    def all_worked() -> bool:
        nonlocal round_
        round_ += 1
        asyncio.run(_throughput(server, 2 * concurrency * count, f"warmup{round_}"))
        return all("completed" in node.proc.log_text() for node in nodes)

    wait_until(all_worked, 180, "every node to complete a warm-up job")
    standin.reset()
    return nodes


def bare_rate(cluster: Cluster, standin: Standin, calls: int, concurrency: int) -> float:
    """Calls per second of the bare LiteLLM loop (its own process): a node's ceiling."""
    done = run_command(_bare_command(standin, concurrency, calls), env=cluster.env, timeout=600)
    bare = json.loads(done.stdout.strip().splitlines()[-1])
    standin.reset()
    return float(bare["calls"] / bare["seconds"])


def _bare_command(standin: Standin, concurrency: int, calls: int) -> list[str]:
    return [
        sys.executable,
        str(BARE),
        "--api-base",
        standin.base_url,
        "--concurrency",
        str(concurrency),
        "--calls",
        str(calls),
    ]


class BareLoop:
    """The bare LiteLLM loop kept running (``--serve``): one timed batch per :meth:`rate`."""

    def __init__(self, cluster: Cluster, standin: Standin, concurrency: int) -> None:
        self._standin = standin
        self._proc = subprocess.Popen(
            [*_bare_command(standin, concurrency, 0), "--serve"],
            env=cluster.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._read()  # "ready": LiteLLM imported, warm-up calls made

    @property
    def pid(self) -> int:
        return self._proc.pid

    def rate(self, calls: int) -> float:
        """Calls per second over ``calls`` calls; the stand-in's log holds just those after."""
        self._standin.reset()
        return calls / self.seconds(calls)

    def seconds(self, calls: int) -> float:
        """Seconds the loop took for ``calls`` calls, timed inside the loop's process."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{calls}\n")
        self._proc.stdin.flush()
        return float(json.loads(self._read())["seconds"])

    def close(self) -> None:
        """Stop the loop (end of its input)."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def _read(self) -> str:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the bare LiteLLM loop exited ({self._proc.wait()})")
        return line

    def __enter__(self) -> BareLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check(counts: dict[str, int], jobs: int) -> None:
    if counts.get("COMPLETED", 0) != jobs:
        raise RuntimeError(f"expected {jobs} COMPLETED, got {counts}")


def run_one_node(ctx: Context) -> list[Figure]:
    """1 node, concurrency 1: throughput, and one job's submit → completed latency."""
    jobs = ctx.size(300, 150)
    samples = ctx.size(60, 25)
    with ctx.cluster("e2e-1x1") as cluster:
        server = cluster.server()
        server.start()
        standin = cluster.standin(LLM_DELAY)
        # One LiteLLM call after another, no queue: what 1 x 1 can reach at best.
        bare = bare_rate(cluster, standin, jobs, 1)
        (node,) = start_nodes(cluster, server, standin, 1, 1)
        pids = {"server": server.pid, "node": node.pid, "standin": standin.pid}
        meter = ctx.meter("e2e-1x1", pids).start()
        elapsed, counts = asyncio.run(_throughput(server, jobs, "e2e1"))
        cpu = meter.stop()
        _check(counts, jobs)
        meter = ctx.meter("e2e-single", pids).start()
        latencies = asyncio.run(_single(server, samples))
        single_cpu = meter.stop()
    per_job = elapsed / jobs * 1e3
    p50 = median(latencies) * 1e3
    return [
        Figure(
            "e2e_1x1",
            "end to end, 1 node, concurrency 1, LLM 20 ms",
            jobs / elapsed,
            "jobs/s",
            at_least(30),
            bound=cpu.bound("the LiteLLM call itself (20 ms + its CPU), next lease prefetched"),
            detail=(
                f"{jobs} jobs in {elapsed:.2f} s = {per_job:.1f} ms per job "
                f"(LLM delay {LLM_DELAY * 1e3:.0f} ms); bare LiteLLM loop at concurrency 1 "
                f"{bare:.1f} calls/s = {1e3 / bare:.1f} ms per call "
                f"(node ÷ bare {jobs / elapsed / bare * 100:.0f} %); CPU per job: server "
                f"{cpu.per_item_ms('server', jobs):.2f} ms, "
                f"node {cpu.per_item_ms('node', jobs):.2f} ms; "
                f"CPU: {cpu.describe()}"
            ),
        ),
        Figure(
            "single_p50",
            "submit → completed, one job, idle node, LLM 20 ms, p50",
            p50,
            "ms",
            at_most(40),
            bound="chain: submit + pickup + LiteLLM (20 ms + CPU) + deliver + poll wake-up",
            detail=(
                f"{samples} samples, user long-polls the job; one bare LiteLLM call "
                f"{1e3 / bare:.1f} ms; p99 "
                f"{percentile(latencies, 99) * 1e3:.1f} ms, min {min(latencies) * 1e3:.1f} ms; "
                f"CPU: {single_cpu.describe()}"
            ),
        ),
    ]


def run_two_nodes(ctx: Context) -> list[Figure]:
    """2 nodes x concurrency 16."""
    jobs = ctx.size(3000, 1200)
    with ctx.cluster("e2e-2x16") as cluster:
        server = cluster.server()
        server.start()
        standin = cluster.standin(LLM_DELAY)
        nodes = start_nodes(cluster, server, standin, 2, 16)
        pids = {"server": server.pid, "standin": standin.pid}
        pids.update({node.node_id: node.pid for node in nodes})
        meter = ctx.meter("e2e-2x16", pids).start()
        elapsed, counts = asyncio.run(_throughput(server, jobs, "e2e2"))
        cpu = meter.stop()
        _check(counts, jobs)
    return [
        Figure(
            "e2e_2x16",
            "end to end, 2 nodes x concurrency 16, LLM 20 ms",
            jobs / elapsed,
            "jobs/s",
            at_least(150),
            bound=cpu.bound(),
            detail=(
                f"{jobs} jobs in {elapsed:.2f} s; CPU per job: server "
                f"{cpu.per_item_ms('server', jobs):.2f} ms, nodes "
                f"{sum(cpu.per_item_ms(n.node_id, jobs) for n in nodes):.2f} ms; "
                f"CPU: {cpu.describe()}"
            ),
        )
    ]
