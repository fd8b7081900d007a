"""Server replicas on PostgreSQL: capacity with one and two, pickup across, e2e, idle nodes.

Each scenario creates its own PostgreSQL database and drops it after
(:mod:`harness.replicas`), and reuses the SQLite scenarios' parts: the
synthetic nodes and bulk bodies of ``capacity``, the node's own queue client
of ``pickup``, the real nodes and stand-in of ``e2e``. On this 2-core machine
the replicas, PostgreSQL and the harness share two cores: see
bench/RESULTS.md ("Replicas on PostgreSQL") for what bounds each figure.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson
import psutil
from harness.api import UserApi, bulk_body, submit_body, wait_all_terminal
from harness.cluster import MODEL, Cluster, Node, Standin
from harness.cpu import CpuShare
from harness.figures import Figure, at_least, at_most, median, percentile
from harness.idle_node import IdleNode
from harness.replicas import PgServer, backend_pids, fresh_database, start_replicas
from harness.synthetic import RESULT, SyntheticNode
from openbeepboop_node.exceptions import ServerUnavailableError
from openbeepboop_node.queue_client import QueueClient
from openbeepboop_schemas import Lease, ResultOutcome
from openbeepboop_testkit.processes import wait_until

from scenarios import Context, e2e
from scenarios.capacity import BATCH, MAX_JOBS
from scenarios.pickup import GAP_SECONDS

#: Synthetic nodes per replica in the capacity scenarios (two in all on one replica, as on SQLite).
NODES_PER_REPLICA = 2
#: Alternating runs of one and of two replicas behind the ratio: on the 2-core
#: host one pair's ratio ranged 1.21-1.85 within an hour, so the figures are
#: the pair with the median ratio.
CAPACITY_PAIRS = 3
#: Idle nodes parked on one replica.
IDLE_NODES = 1000
#: How long the idle replica's CPU is measured with every node parked.
IDLE_WINDOW_SECONDS = 20.0
IDLE_FETCH_WAIT = 30.0
#: Idle nodes come up this many at a time, this far apart (1,000 in about 5 s).
RAMP_BATCH = 50
RAMP_PAUSE_SECONDS = 0.25
#: Concurrency of each node in the end-to-end scenario.
E2E_CONCURRENCY = 16


def _postgres_pids(replicas: list[PgServer]) -> dict[str, int]:
    """The replicas, and PostgreSQL's backends serving their database (its CPU).

    Read when called: connections a replica opens later are not counted.
    """
    pids = {replica.name: replica.pid for replica in replicas}
    for pid in backend_pids(replicas[0].database_url):
        pids[f"pg-{pid}"] = pid
    return pids


def _folded(cpu: CpuShare) -> CpuShare:
    """The same shares with PostgreSQL's backends summed as one ``postgres`` entry."""
    shares = {n: v for n, v in cpu.shares.items() if not n.startswith("pg-")}
    shares["postgres"] = sum(v for n, v in cpu.shares.items() if n.startswith("pg-"))
    return CpuShare(cpu.seconds, shares, cpu.others)


async def _capacity(replicas: list[PgServer], jobs: int) -> tuple[float, float]:
    """Bulk-submit through every replica in turn while synthetic nodes on each answer."""
    key, node_key = replicas[0].user_key, replicas[0].node_key
    apis = [UserApi(r.url, key) for r in replicas]
    nodes = [
        SyntheticNode(r.url, node_key, f"synthetic-{r.name}-{i}")
        for r in replicas
        for i in range(NODES_PER_REPLICA if len(replicas) > 1 else 2)
    ]
    bodies = [bulk_body(i * BATCH, BATCH, "pgcapacity") for i in range(jobs // BATCH)]
    stop = asyncio.Event()
    started = time.perf_counter()
    workers = [asyncio.create_task(node.work(stop, MAX_JOBS)) for node in nodes]

    async def submit(api: UserApi, share: list[bytes]) -> None:
        for body in share:
            await api.bulk(body)

    await asyncio.gather(*(submit(api, bodies[i :: len(apis)]) for i, api in enumerate(apis)))
    submitted = time.perf_counter() - started
    while sum(node.accepted for node in nodes) < jobs:
        await asyncio.sleep(0.005)
        for worker in workers:
            if worker.done():
                worker.result()
    elapsed = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*workers)
    for api in apis:
        await api.aclose()
    for node in nodes:
        await node.aclose()
    return elapsed, submitted


def _capacity_figure(ctx: Context, count: int, run: int = 1) -> tuple[Figure, float]:
    jobs = ctx.size(20_000, 6_000)
    name = f"pgcapacity{count}"
    label = name if run == 1 else f"{name}-{run}"
    with fresh_database() as url, ctx.cluster(label) as cluster:
        replicas = start_replicas(cluster, url, count)
        asyncio.run(_capacity(replicas, BATCH * count))  # warm-up
        meter = ctx.meter(label, _postgres_pids(replicas)).start()
        elapsed, submitted = asyncio.run(_capacity(replicas, jobs))
        cpu = _folded(meter.stop())
    rate = jobs / elapsed
    pg_share = cpu.shares["postgres"]
    servers = ", ".join(f"{r} {cpu.shares.get(r, 0):.0%}" for r in (x.name for x in replicas))
    figure = Figure(
        name,
        f"queue capacity, PostgreSQL, {count} replica{'s' if count > 1 else ''}",
        rate,
        "jobs/s",
        at_least(2000) if count == 1 else None,
        bound=cpu.bound(),
        detail=(
            f"{jobs} jobs, bulk submits of {BATCH} spread over the replicas, "
            f"{len(replicas) * (NODES_PER_REPLICA if count > 1 else 2)} synthetic nodes "
            f"({'two per replica' if count > 1 else 'two'}) fetching up to {MAX_JOBS} leases; "
            f"all submitted after {submitted:.2f} s, answered after {elapsed:.2f} s; "
            f"replicas' CPU: {servers}; PostgreSQL (its backends for this database) "
            f"{pg_share:.0%} of a core; "
            f"CPU: {cpu.describe()}"
        ),
    )
    return figure, rate


def run_capacity_one(ctx: Context) -> list[Figure]:
    """Capacity with one replica on PostgreSQL."""
    figure, _ = _capacity_figure(ctx, 1)
    return [figure]


def run_capacity_two(ctx: Context) -> list[Figure]:
    """Capacity with one and two replicas, alternated; the figures are the median pair's."""
    pairs = [
        (_capacity_figure(ctx, 1, run), _capacity_figure(ctx, 2, run))
        for run in range(1, ctx.size(CAPACITY_PAIRS, 1) + 1)
    ]
    ratios = [two_rate / one_rate for (_, one_rate), (_, two_rate) in pairs]
    middle = sorted(range(len(pairs)), key=ratios.__getitem__)[len(pairs) // 2]
    (one, one_rate), (two, two_rate) = pairs[middle]
    runs = "; ".join(
        f"{one_rate:,.0f} → {two_rate:,.0f} jobs/s ({two_rate / one_rate:.2f} x)"
        for (_, one_rate), (_, two_rate) in pairs
    )
    ratio = Figure(
        "pgcapacity_ratio",
        "queue capacity, PostgreSQL, 2 replicas ÷ 1 replica",
        two_rate / one_rate,
        "x",
        at_least(1.6),
        bound=two.bound,
        detail=(
            f"{len(pairs)} alternating runs of 1 then 2 replicas, each on a fresh database: "
            f"{runs}; the figures above are the median pair's"
        ),
    )
    return [one, two, ratio]


async def _pickup_across(
    submit_url: str, node_url: str, key: str, node_key: str, count: int
) -> list[float]:
    """Submit on one replica, the node's own queue client long-polling the other."""
    api = UserApi(submit_url, key)
    node = IdleNode(node_url, node_key, "idle-across")

    async def fetch_stamped() -> tuple[list[str], float]:
        job_ids = await node.fetch()
        return job_ids, time.perf_counter()

    latencies: list[float] = []
    try:
        for index in range(count):
            fetch = asyncio.create_task(fetch_stamped())
            await asyncio.sleep(GAP_SECONDS)
            if fetch.done():
                raise RuntimeError(f"the idle fetch returned early: {fetch.result()}")
            sent = time.perf_counter()
            job_id = await api.submit(submit_body(index, "pgpickup"))
            leased, arrived = await fetch
            if leased != [job_id]:
                raise RuntimeError(f"expected a lease for {job_id}, got {leased}")
            latencies.append(arrived - sent)
            await node.answer()
    finally:
        await api.aclose()
        await node.aclose()
    return latencies


def run_pickup_across(ctx: Context) -> list[Figure]:
    """Pickup with the submit on replica A and the idle node long-polling replica B."""
    count = ctx.size(200, 60)
    with fresh_database() as url, ctx.cluster("pgpickup") as cluster:
        first, second = start_replicas(cluster, url, 2)
        args = (first.url, second.url, first.user_key, first.node_key)
        asyncio.run(_pickup_across(*args, 5))  # warm-up
        meter = ctx.meter("pgpickup", _postgres_pids([first, second])).start()
        latencies = asyncio.run(_pickup_across(*args, count))
        cpu = _folded(meter.stop())
        same = asyncio.run(_pickup_across(second.url, second.url, *args[2:], count))
    p50, p99 = median(latencies) * 1e3, percentile(latencies, 99) * 1e3
    chain = "submit on A + the wake-up reaching B (NOTIFY, else B's periodic re-check) + claim"
    detail = (
        f"{count} samples, submit on replica A, the node's queue client (aiohttp) in a 30 s "
        f"long-poll on replica B; max {max(latencies) * 1e3:.1f} ms; the same with submit and "
        f"node on one replica: p50 {median(same) * 1e3:.1f} ms, p99 "
        f"{percentile(same, 99) * 1e3:.1f} ms; CPU: {cpu.describe()}"
    )
    return [
        Figure(
            "pgpickup_p50",
            "pickup across replicas (submit on A, node on B), p50",
            p50,
            "ms",
            at_most(10),
            bound=chain,
            detail=detail,
        ),
        Figure(
            "pgpickup_p99",
            "pickup across replicas (submit on A, node on B), p99",
            p99,
            "ms",
            at_most(50),
            bound=chain,
        ),
    ]


async def _throughput(replicas: list[PgServer], jobs: int, tag: str) -> tuple[float, int]:
    """Bulk-submit ``jobs`` split over the replicas; seconds until all terminal, COMPLETED."""
    apis = [UserApi(r.url, r.user_key) for r in replicas]
    share = jobs // len(apis)

    async def one(api: UserApi, index: int) -> dict[str, int]:
        ids: list[str] = []
        for start in range(0, share, e2e.BATCH):
            body = bulk_body(index * share + start, min(e2e.BATCH, share - start), tag)
            ids += await api.bulk(body)
        return await wait_all_terminal(api, ids, e2e.JOB_TIMEOUT)

    try:
        started = time.perf_counter()
        parts = await asyncio.gather(*(one(api, i) for i, api in enumerate(apis)))
        elapsed = time.perf_counter() - started
    finally:
        for api in apis:
            await api.aclose()
    return elapsed, sum(part.get("COMPLETED", 0) for part in parts)


def _nodes_on(
    cluster: Cluster, replicas: list[PgServer], standin: Standin, per_replica: int
) -> list[Node]:
    """``per_replica`` nodes of concurrency 16 on each replica, warmed up (every one worked)."""
    nodes = [
        cluster.node(replica, standin, f"node-{r + 1}-{i + 1}", E2E_CONCURRENCY)
        for r, replica in enumerate(replicas)
        for i in range(per_replica)
    ]
    round_ = 0

    def all_worked() -> bool:
        nonlocal round_
        round_ += 1
        asyncio.run(_throughput(replicas, 2 * E2E_CONCURRENCY * len(nodes), f"warmup{round_}"))
        return all("completed" in node.proc.log_text() for node in nodes if node.proc)

    wait_until(all_worked, 240, "every node to complete a warm-up job")
    standin.reset()
    return nodes


def run_e2e(ctx: Context) -> list[Figure]:
    """2 replicas, 2 nodes of concurrency 16 long-polling each, stand-in at 20 ms."""
    jobs = ctx.size(4000, 1200)
    with fresh_database() as url, ctx.cluster("pge2e") as cluster:
        replicas = start_replicas(cluster, url, 2)
        standin = cluster.standin(e2e.LLM_DELAY)
        nodes = _nodes_on(cluster, replicas, standin, 2)
        pids = {**_postgres_pids(replicas), "standin": standin.pid}
        pids.update({node.node_id: node.pid for node in nodes})
        meter = ctx.meter("pge2e", pids).start()
        elapsed, completed = asyncio.run(_throughput(replicas, jobs, "pge2e"))
        cpu = _folded(meter.stop())
    if completed != jobs:
        raise RuntimeError(f"expected {jobs} COMPLETED, got {completed}")
    pg_share = cpu.shares["postgres"]
    return [
        Figure(
            "pge2e_2x2x16",
            "end to end, 2 replicas x 2 nodes x 16, PostgreSQL, LLM 20 ms",
            jobs / elapsed,
            "jobs/s",
            at_least(300),
            bound=cpu.bound(),
            detail=(
                f"{jobs} jobs, half bulk-submitted on each replica, two nodes of concurrency "
                f"16 long-polling each replica; {elapsed:.2f} s; PostgreSQL {pg_share:.0%} of "
                f"a core; CPU: {cpu.describe()}"
            ),
        )
    ]


def _answer(lease: Lease) -> ResultOutcome:
    return ResultOutcome(
        job_id=lease.job_id, lease_token=lease.lease_token, result=orjson.loads(RESULT)
    )


class _IdleFleet:
    """``count`` node queue clients (one connection each) parked in long-polls on one URL.

    Each re-polls when its fetch ends, until :meth:`stop`; a lease is stamped on
    arrival, put on :attr:`leased` and answered.
    """

    def __init__(self, url: str, keys: list[str], count: int) -> None:
        self.clients = [
            QueueClient(url, keys[i % len(keys)], f"idle-{i:04d}", fetch_wait=IDLE_FETCH_WAIT)
            for i in range(count)
        ]
        self.leased: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: Fetches that failed (then retried after a second), and the last reason.
        self.errors = 0
        self.last_error = ""

    async def start(self) -> None:
        """Start the clients a batch at a time, as nodes come up: not one connect storm."""
        for first in range(0, len(self.clients), RAMP_BATCH):
            batch = self.clients[first : first + RAMP_BATCH]
            self._tasks += [asyncio.create_task(self._loop(c)) for c in batch]
            await asyncio.sleep(RAMP_PAUSE_SECONDS)

    async def _loop(self, client: QueueClient) -> None:
        while not self._stop.is_set():
            try:
                leases = await client.fetch([MODEL], 1, IDLE_FETCH_WAIT)
            except ServerUnavailableError as exc:
                self.errors += 1
                self.last_error = str(exc)
                await asyncio.sleep(1.0)
                continue
            arrived = time.perf_counter()
            for lease in leases:
                self.leased.put_nowait((lease.job_id, arrived))
            if leases:
                await client.submit([_answer(lease) for lease in leases])

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self.clients:
            await client.aclose()


@dataclass
class _IdleResult:
    cpu: CpuShare
    rss_mb: float
    parked: int
    latencies: list[float]
    errors: str


async def _idle(
    ctx: Context, replica: PgServer, keys: list[str], count: int, samples: int
) -> _IdleResult:
    fleet = _IdleFleet(replica.url, keys, count)
    await fleet.start()
    try:
        deadline = time.monotonic() + 120
        while _connections(replica) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)  # the last fetches are parked, not being parsed
        parked = _connections(replica)
        meter = ctx.meter("pgidle", {replica.name: replica.pid}).start()
        await asyncio.sleep(IDLE_WINDOW_SECONDS)
        cpu = meter.stop()
        rss = psutil.Process(replica.pid).memory_info().rss / 2**20
        api = UserApi(replica.url, replica.user_key)
        latencies: list[float] = []
        try:
            for index in range(samples):
                await asyncio.sleep(GAP_SECONDS * 4)  # the node that answered is parked again
                sent = time.perf_counter()
                job_id = await api.submit(submit_body(index, "pgidle"))
                got, arrived = await asyncio.wait_for(fleet.leased.get(), 60)
                if got != job_id:
                    raise RuntimeError(f"expected a lease for {job_id}, a node got {got}")
                latencies.append(arrived - sent)
        finally:
            await api.aclose()
    finally:
        await fleet.stop()
    errors = f"{fleet.errors} failed fetches (last: {fleet.last_error})" if fleet.errors else ""
    return _IdleResult(cpu, rss, parked, latencies, errors or "no failed fetch")


def run_idle(ctx: Context) -> list[Figure]:
    """1,000 idle nodes long-polling one replica: its CPU and memory, and pickup among them."""
    count = ctx.size(IDLE_NODES, 300)
    samples = ctx.size(60, 20)
    with fresh_database() as url, ctx.cluster("pgidle") as cluster:
        (replica,) = start_replicas(cluster, url, 1)
        # One key may hold max_fetches_per_key (1,000) long-polls at once: two keys.
        keys = [replica.node_key, replica.create_key("NODE", "bench-idle-2")]
        result = asyncio.run(_idle(ctx, replica, keys, count, samples))
    latencies = result.latencies
    detail = (
        f"{count} node queue clients (aiohttp, one connection each) in 30 s long-polls on one "
        f"PostgreSQL replica ({result.parked} connections open when measured), CPU over "
        f"{IDLE_WINDOW_SECONDS:.0f} s; pickup: {samples} single submits, stamped when one of "
        f"the parked nodes gets the lease; pickup p99 {percentile(latencies, 99) * 1e3:.1f} ms; "
        f"{result.errors}; "
        f"CPU: {result.cpu.describe()}"
    )
    share = result.cpu.shares.get(replica.name, 0.0)
    label = f"{count} idle long-polling nodes on one replica"
    return [
        Figure(
            "pgidle_cpu",
            f"{label}: server CPU",
            share * 100,
            "% of a core",
            at_most(5),
            bound="each fetch re-polled every 30 s + one periodic re-check for all parked polls",
            detail=detail,
        ),
        Figure(
            "pgidle_rss",
            f"{label}: server RSS",
            result.rss_mb,
            "MB",
            at_most(300),
            bound="a parked fetch's state and its connection, per node",
        ),
        Figure(
            "pgidle_pickup_p50",
            f"{label}: pickup p50",
            median(latencies) * 1e3,
            "ms",
            at_most(10),
            bound="submit + hand-off to one of the parked fetches + its answer",
        ),
    ]


def _connections(replica: PgServer) -> int:
    """Established TCP connections of the replica (each parked long-poll holds one)."""
    proc = psutil.Process(replica.pid)
    return sum(1 for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_ESTABLISHED)
