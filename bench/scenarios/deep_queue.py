"""A deep queue: claim latency with 1M queued vs 1k queued, and the server's memory then.

The database is filled before the server starts, by inserting rows through
the server package's own tables and engine (what a bulk submit stores, a
million times, in seconds rather than minutes). Then a synthetic node claims
one job at a time (``wait`` 0) and the harness times each claim; the server's
resident memory is read from /proc after claims, a ``/metrics`` scrape (queue
depth by status and model), a listing and a poll, and its peak (VmHWM) is the
figure.

``deepfair`` does the same with the jobs spread over 1,000 owners (rows of
``api_keys`` made with the fill), 1k queued and then 1M queued: a claim's
skip scan visits every owner with queued jobs, so this is the ratio that
shows the claim does not grow with the depth when owners are many; its
detail also gives the one-owner 1k baseline.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import sqlalchemy as sa
from harness.api import TIMEOUT, UserApi, chat_request, headers, submit_body
from harness.cluster import Server
from harness.cpu import peak_rss_mb, rss_mb
from harness.figures import Figure, at_most, median, percentile
from harness.synthetic import SyntheticNode
from openbeepboop_schemas import JOBS_PATH, METRICS_PATH

from scenarios import Context

FILL_CHUNK = 20_000
CLAIM_BATCH = 100


def _owner_ids(conn: sa.Connection, owners: int, now: float) -> list[int]:
    """The bench USER key's id, or ``owners`` new key rows' (never used to log in)."""
    from openbeepboop_server.db.tables import api_keys

    if owners == 1:
        found = conn.execute(sa.select(api_keys.c.id).where(api_keys.c.name == "bench-user"))
        return [found.scalar_one()]
    rows = [
        {"name": f"deep-owner-{i}", "role": "USER", "key_sha256": f"{i:064x}", "created_at": now}
        for i in range(owners)
    ]
    conn.execute(api_keys.insert(), rows)
    names = [row["name"] for row in rows]
    found = conn.execute(sa.select(api_keys.c.id).where(api_keys.c.name.in_(names)))
    return sorted(found.scalars())


def fill(server: Server, count: int, owners: int = 1) -> float:
    """Insert ``count`` QUEUED jobs, owned by ``owners`` keys in turn; seconds taken."""
    from openbeepboop_server.db.database import Database
    from openbeepboop_server.db.tables import jobs
    from openbeepboop_server.queue.ids import new_job_id

    started = time.perf_counter()
    db = Database.connect(server.database_url, sqlite_synchronous="OFF")
    try:
        now = time.time()
        with db.write() as conn:
            owner_ids = _owner_ids(conn, owners, now)
        for start in range(0, count, FILL_CHUNK):
            rows = [
                {
                    "id": new_job_id(),
                    "owner_key_id": owner_ids[index % len(owner_ids)],
                    "model": "bench-model",
                    "status": "QUEUED",
                    "request": orjson.dumps(chat_request(index, "deep")).decode(),
                    "attempts": 0,
                    "max_attempts": 3,
                    "not_before": 0.0,
                    "created_at": now,
                    "updated_at": now,
                    "priority": 0,
                    "claim_rank": now,
                }
                for index in range(start, min(count, start + FILL_CHUNK))
            ]
            with db.write() as conn:
                conn.execute(jobs.insert(), rows)
    finally:
        db.dispose()
    return time.perf_counter() - started


async def _claims(server: Server, count: int, max_jobs: int) -> list[float]:
    node = SyntheticNode(server.url, server.node_key, "synthetic-deep")
    latencies: list[float] = []
    try:
        for _ in range(count):
            sent = time.perf_counter()
            leases = await node.fetch(max_jobs, 0.0)
            latencies.append(time.perf_counter() - sent)
            if len(leases) != max_jobs:
                raise RuntimeError(f"expected {max_jobs} leases, got {len(leases)}")
            # Handed back at once (untimed): the queue stays exactly as deep.
            await node.deliver(leases, release=True)
    finally:
        await node.aclose()
    return latencies


async def _other_reads(server: Server) -> None:
    """What else touches every row or many: a metrics scrape, a listing, a poll."""
    api = UserApi(server.url, server.user_key)
    try:
        job_id = await api.submit(submit_body(0, "deep-extra"))
        listing = await api.http.get(JOBS_PATH, params={"limit": 100})
        listing.raise_for_status()
        ids = [entry["id"] for entry in orjson.loads(listing.content)["data"]]
        await api.poll([job_id, *ids])
    finally:
        await api.aclose()
    async with httpx.AsyncClient(
        base_url=server.url, headers=headers(server.admin_key), timeout=TIMEOUT
    ) as admin:
        (await admin.get(METRICS_PATH)).raise_for_status()


def _measure(ctx: Context, queued: int, samples: int, owners: int = 1) -> dict[str, float]:
    with ctx.cluster(f"deep-{queued}-{owners}") as cluster:
        server = cluster.server()
        fill_seconds = fill(server, queued, owners)
        server.start()
        started_rss = rss_mb(server.pid)
        asyncio.run(_claims(server, 20, 1))  # warm-up
        one = asyncio.run(_claims(server, samples, 1))
        many = asyncio.run(_claims(server, max(10, samples // 10), CLAIM_BATCH))
        asyncio.run(_other_reads(server))
        return {
            "fill": fill_seconds,
            "p50": median(one) * 1e3,
            "p99": percentile(one, 99) * 1e3,
            "batch_p50": median(many) * 1e3,
            "rss_start": started_rss,
            "rss": rss_mb(server.pid),
            "peak": peak_rss_mb(server.pid),
            "db_mb": server.database.stat().st_size / 1e6,
        }


def run(ctx: Context) -> list[Figure]:
    """1k queued, then 1M queued (fresh servers)."""
    deep = ctx.size(1_000_000, 1_000_000)
    samples = ctx.size(300, 150)
    small = _measure(ctx, 1_000, samples)
    large = _measure(ctx, deep, samples)
    ratio = large["p50"] / small["p50"]
    return [
        Figure(
            "claim_ratio",
            f"claim latency, {deep:,} queued ÷ 1,000 queued (p50)",
            ratio,
            "x",
            at_most(2),
            bound="index walk on ix_jobs_claim: O(max_jobs), not O(queue)",
            detail=(
                f"{samples} claims of 1 job (wait 0): p50 {small['p50']:.2f} ms vs "
                f"{large['p50']:.2f} ms, p99 {small['p99']:.2f} vs {large['p99']:.2f} ms; "
                f"claims of {CLAIM_BATCH}: p50 {small['batch_p50']:.2f} vs "
                f"{large['batch_p50']:.2f} ms; database {large['db_mb']:.0f} MB, filled in "
                f"{large['fill']:.0f} s"
            ),
        ),
        Figure(
            "server_rss",
            f"server resident memory, {deep:,} queued (peak)",
            large["peak"],
            "MB",
            at_most(200),
            bound="Python + SQLAlchemy + pools; rows are never all loaded",
            detail=(
                f"VmHWM over start, {samples} claims, a /metrics scrape, a listing and a poll; "
                f"RSS {large['rss_start']:.0f} MB after start, {large['rss']:.0f} MB at the end; "
                f"with 1,000 queued: peak {small['peak']:.0f} MB"
            ),
        ),
    ]


#: Owners with queued jobs in ``deepfair``.
DEEP_OWNERS = 1_000


def run_fair(ctx: Context) -> list[Figure]:
    """1k queued by one owner, 1k then 1M queued across 1,000 owners (fresh servers)."""
    deep = ctx.size(1_000_000, 1_000_000)
    samples = ctx.size(300, 150)
    alone = _measure(ctx, 1_000, samples)
    small = _measure(ctx, 1_000, samples, DEEP_OWNERS)
    large = _measure(ctx, deep, samples, DEEP_OWNERS)
    return [
        Figure(
            "claim_ratio_owners",
            f"claim latency, {deep:,} queued across {DEEP_OWNERS:,} owners ÷ 1,000 queued "
            f"across as many (p50)",
            large["p50"] / small["p50"],
            "x",
            at_most(2),
            bound="skip scan on ix_jobs_fair: O(owners with queued jobs + max_jobs), not O(queue)",
            detail=(
                f"{samples} claims of 1 job (wait 0): p50 {small['p50']:.2f} ms vs "
                f"{large['p50']:.2f} ms, p99 {small['p99']:.2f} vs {large['p99']:.2f} ms; "
                f"claims of {CLAIM_BATCH}: p50 {small['batch_p50']:.2f} vs "
                f"{large['batch_p50']:.2f} ms; 1,000 queued by one owner: p50 "
                f"{alone['p50']:.2f} ms (÷ that: {large['p50'] / alone['p50']:.2f}x), claims of "
                f"{CLAIM_BATCH} {alone['batch_p50']:.2f} ms; peak RSS {large['peak']:.0f} MB"
            ),
        ),
    ]
