"""Single submits: one keep-alive client, one job per request, one after another.

The target figure is taken with the leanest keep-alive client the standard
library has (``http.client``, ~0.1 ms of client CPU per request), so that it
measures the server's cost per request rather than the client's: with one
request in flight, the client's CPU adds straight to every round trip. The
same loop with ``httpx.Client`` (~0.6 ms of client CPU per request) and with
the product's own ``openbeepboop.Client`` (httpx plus an ``Idempotency-Key``
on every submit, which the server records) are reported beside it, and the
``http.client`` loop once more with a key whose ``--max-queued`` and
``--rate-limit`` are set (high enough never to refuse): the quota checks' cost.
"""

from __future__ import annotations

import contextlib
import http.client
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx
from harness.api import TIMEOUT, chat_request, headers, submit_body
from harness.cluster import MODEL, Server
from harness.cpu import CpuShare
from harness.figures import Figure, at_least, median, percentile
from openbeepboop_schemas import CHAT_COMPLETIONS_PATH
from openbeepboop_testkit.cluster import find_key

from scenarios import Context

WARMUP = 50


def _timed(send: Callable[[int], None], first: int, count: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    started = time.perf_counter()
    for index in range(first, first + count):
        sent = time.perf_counter()
        send(index)
        latencies.append(time.perf_counter() - sent)
    return time.perf_counter() - started, latencies


@contextlib.contextmanager
def _stdlib(server: Server, count: int) -> Iterator[Callable[[int], None]]:
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=60)
    hdrs = headers(server.user_key)
    bodies = [submit_body(i) for i in range(count)]

    def send(index: int) -> None:
        conn.request("POST", CHAT_COMPLETIONS_PATH, body=bodies[index], headers=hdrs)
        response = conn.getresponse()
        body = response.read()
        if response.status != 202:
            raise RuntimeError(f"submit answered {response.status}: {body[:300]!r}")

    try:
        yield send
    finally:
        conn.close()


@contextlib.contextmanager
def _httpx(server: Server, count: int) -> Iterator[Callable[[int], None]]:
    bodies = [submit_body(i) for i in range(count)]
    with httpx.Client(
        base_url=server.url, headers=headers(server.user_key), timeout=TIMEOUT
    ) as http_client:

        def send(index: int) -> None:
            response = http_client.post(CHAT_COMPLETIONS_PATH, content=bodies[index])
            if response.status_code != 202:
                raise RuntimeError(f"submit answered {response.status_code}: {response.text}")

        yield send


@contextlib.contextmanager
def _library(server: Server, count: int) -> Iterator[Callable[[int], None]]:
    from openbeepboop import Client

    requests = [chat_request(i, "library") for i in range(count)]
    with Client(base_url=server.url, api_key=server.user_key) as client:

        def send(index: int) -> None:
            request = requests[index]
            client.chat.completions.create(
                model=MODEL, messages=request["messages"], max_tokens=request["max_tokens"]
            )

        yield send


CLIENTS = {"http.client": _stdlib, "httpx.Client": _httpx, "openbeepboop.Client": _library}


#: Variants whose user key has quotas, set high enough never to refuse: what the
#: checks cost (a locked read of the key's row, a count of its unfinished jobs
#: through a partial index, and a write of its rate state, in the submit's transaction).
QUOTA_VARIANTS = frozenset({"submit_quota"})
QUOTA_FLAGS = ("--max-queued", "1000000000", "--rate-limit", "1000000000")


def quota_key(server: Server) -> str:
    """A USER key with quotas that never trigger."""
    created = server.cli("keys", "create", "--role", "USER", "--name", "bench-quota", *QUOTA_FLAGS)
    return find_key(created.stdout)


def _detail(client: str, count: int, elapsed: float, latencies: list[float], cpu: CpuShare) -> str:
    return (
        f"{count} sequential requests ({client}, keep-alive) in {elapsed:.2f} s; "
        f"latency p50 {median(latencies) * 1e3:.2f} ms, p99 {percentile(latencies, 99) * 1e3:.2f} "
        f"ms; CPU per request: server {cpu.per_item_ms('server', count):.3f} ms, client "
        f"{cpu.per_item_ms('harness', count):.3f} ms; CPU: {cpu.describe()}"
    )


def run(ctx: Context) -> list[Figure]:
    """The same loop with three clients, each against a fresh server."""
    count = ctx.size(3000, 1000)
    figures: list[Figure] = []
    variants = [
        ("submit", "single submits, one keep-alive client (http.client)", "http.client", 800.0),
        ("submit_httpx", "single submits, httpx.Client (info)", "httpx.Client", None),
        (
            "submit_library",
            "single submits, openbeepboop.Client (info)",
            "openbeepboop.Client",
            None,
        ),
        (
            "submit_quota",
            "single submits by a key with --max-queued and --rate-limit (http.client)",
            "http.client",
            None,
        ),
    ]
    for key, label, client, target in variants:
        with ctx.cluster(key) as cluster:
            server = cluster.server()
            if key in QUOTA_VARIANTS:
                server.user_key = quota_key(server)
            server.start()
            with CLIENTS[client](server, WARMUP + count) as send:
                _timed(send, 0, WARMUP)
                meter = ctx.meter(key, {"server": server.pid}).start()
                elapsed, latencies = _timed(send, WARMUP, count)
                cpu = meter.stop()
        figures.append(
            Figure(
                key,
                label,
                count / elapsed,
                "jobs/s",
                at_least(target) if target else None,
                bound=cpu.bound("round trip per request: client + server CPU in series"),
                detail=_detail(client, count, elapsed, latencies, cpu),
            )
        )
    return figures
