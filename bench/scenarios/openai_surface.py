"""The OpenAI-compatible surface (``/openai/v1``) measured with the official ``openai`` SDK.

``openai_sync``: one synchronous chat completion through the queue (idle
node, stand-in LLM at 20 ms) against the same call made straight to the
stand-in, both by the SDK: the p50 the queue adds.

``openai_batch``: a 50,000-line batch file through ``files.create`` and
``batches.create`` with two nodes x 16 idle: time until every line is
queued (the batch ``in_progress``), the batch run to the end, then its
output file downloaded (first byte, whole file). The server's resident
memory is sampled the whole time.

``openai_ratio``: the same jobs run twice on one cluster (2 nodes x 16,
LLM 20 ms): bulk-submitted natively and polled until terminal, then as a
batch (upload, create, wait for ``completed``, download the output): batch
throughput ÷ native.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
from harness.api import chat_request
from harness.cluster import MODEL, PROVIDER_KEY, Server
from harness.cpu import peak_rss_mb, rss_mb
from harness.figures import Figure, at_least, at_most, median, percentile
from openai import OpenAI

from scenarios import Context
from scenarios.e2e import LLM_DELAY, BareLoop, _throughput, start_nodes

#: Seconds between two looks at a validating batch (the figure is its end).
STATUS_POLL = 0.05
#: Seconds between two looks at a running batch: each look counts its jobs by
#: status, and 20 a second would take server CPU from the run being measured
#: (users poll every few seconds at most).
RUN_POLL = 0.5
BATCH_TIMEOUT = 1800.0
ENDPOINT = "/v1/chat/completions"


def _sdk(server: Server) -> OpenAI:
    return OpenAI(
        base_url=server.url + "/openai/v1", api_key=server.user_key, max_retries=0, timeout=600
    )


def batch_file(count: int, tag: str) -> bytes:
    """A batch input file of ``count`` lines, the requests the native runs submit."""
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"{tag}-{i}",
                "method": "POST",
                "url": ENDPOINT,
                "body": chat_request(i, tag),
            }
        )
        + b"\n"
        for i in range(count)
    )


class PeakRss:
    """Samples a process's resident memory every 20 ms in a thread; the peak seen."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self._pid))
            self._stop.wait(0.02)


def _wait_status(
    client: OpenAI,
    batch_id: str,
    done: Callable[[str], bool],
    seen: dict[str, float] | None = None,
    interval: float = STATUS_POLL,
) -> Any:
    """Poll the batch until ``done(status)``; ``seen`` gets when each status was first seen."""
    deadline = time.monotonic() + BATCH_TIMEOUT
    while True:
        batch = client.batches.retrieve(batch_id)
        if seen is not None:
            seen.setdefault(batch.status, time.perf_counter())
        if done(batch.status):
            return batch
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} still {batch.status}")
        time.sleep(interval)


def _download(client: OpenAI, file_id: str) -> tuple[float, float, int]:
    """(first byte s, whole file s, lines) of one file's content, streamed by the SDK."""
    started = time.perf_counter()
    first = None
    lines = 0
    with client.files.with_streaming_response.content(file_id) as response:
        for part in response.iter_bytes():
            if first is None:
                first = time.perf_counter() - started
            lines += part.count(b"\n")
    return first or 0.0, time.perf_counter() - started, lines


def run_sync(ctx: Context) -> list[Figure]:
    """Synchronous chat completion: through the queue vs straight to the stand-in, p50.

    A third sample alternates with those two: one call of the bare LiteLLM
    loop (the node's own call, no queue), after the same pause. It splits
    the added latency into LiteLLM's share and the queue's. Timed back to
    back instead, LiteLLM's call is ~1.5 ms faster than after a pause, and
    the queue's share would be overstated by that much.
    """
    samples = ctx.size(100, 30)
    with ctx.cluster("openai-sync") as cluster:
        server = cluster.server()
        server.start()
        standin = cluster.standin(LLM_DELAY)
        [node] = start_nodes(cluster, server, standin, 1, 1)
        direct = OpenAI(base_url=standin.base_url, api_key=PROVIDER_KEY, max_retries=0)
        queued = _sdk(server)
        messages: Any = [{"role": "user", "content": "a short question"}]
        timings: dict[str, list[float]] = {"direct": [], "queued": [], "bare": []}
        with BareLoop(cluster, standin, 1) as bare:

            def sdk_call(client: OpenAI, model: str) -> Callable[[], float]:
                def timed() -> float:
                    sent = time.perf_counter()
                    client.chat.completions.create(model=model, messages=messages, max_tokens=16)
                    return time.perf_counter() - sent

                return timed

            calls = {
                "direct": sdk_call(direct, "standin-model"),
                "queued": sdk_call(queued, MODEL),
                "bare": partial(bare.seconds, 1),
            }
            pids = {"server": server.pid, "node": node.pid, "standin": standin.pid}
            meter = ctx.meter("openai-sync", pids)
            for index in range(samples + 5):
                if index == 5:  # the first calls warm every path
                    meter.start()
                for name, call in calls.items():
                    time.sleep(0.05)  # the node is back in its long-poll
                    seconds = call()
                    if index >= 5:
                        timings[name].append(seconds)
            cpu = meter.stop()
    direct_p50 = median(timings["direct"]) * 1e3
    queued_p50 = median(timings["queued"]) * 1e3
    bare_ms = median(timings["bare"]) * 1e3
    litellm_share = bare_ms - direct_p50
    return [
        Figure(
            "openai_sync_added_p50",
            "SDK chat.completions.create through the queue, idle node, LLM 20 ms: added p50",
            queued_p50 - direct_p50,
            "ms",
            at_most(10),
            bound=(
                f"chain: the node's LiteLLM call ({litellm_share:+.1f} ms over the SDK's own) "
                f"+ submit, pickup, deliver and the waiter's wake-up "
                f"({queued_p50 - bare_ms:.1f} ms)"
            ),
            detail=(
                f"{samples} alternating samples each; through the queue p50 {queued_p50:.1f} ms "
                f"(p99 {percentile(timings['queued'], 99) * 1e3:.1f}), straight to the stand-in "
                f"p50 {direct_p50:.1f} ms (p99 {percentile(timings['direct'], 99) * 1e3:.1f}); "
                f"one bare LiteLLM call (the node's, no queue) p50 {bare_ms:.1f} ms; CPU per "
                f"call through the queue: server {cpu.per_item_ms('server', samples):.2f} ms, "
                f"node {cpu.per_item_ms('node', samples):.2f} ms; CPU: {cpu.describe()}"
            ),
        ),
        Figure(
            "openai_sync_over_litellm_p50",
            "the same, added over one bare LiteLLM call (the queue's own share) (info)",
            queued_p50 - bare_ms,
            "ms",
            bound="submit + pickup + deliver + the waiter's wake-up",
            detail="through the queue p50 minus the bare LiteLLM call's p50 (alternated with it)",
        ),
    ]


def run_batch(ctx: Context) -> list[Figure]:
    """A 50,000-line batch: upload to all queued, run, output download; server RSS."""
    lines = ctx.size(50_000, 10_000)
    data = batch_file(lines, "big")
    with ctx.cluster("openai-batch") as cluster:
        server = cluster.server()
        server.start()
        standin = cluster.standin(LLM_DELAY)
        start_nodes(cluster, server, standin, 2, 16)
        client = _sdk(server)
        rss_before = rss_mb(server.pid)
        with PeakRss(server.pid) as peak:
            started = time.perf_counter()
            uploaded = client.files.create(file=("big.jsonl", io.BytesIO(data)), purpose="batch")
            upload_s = time.perf_counter() - started
            batch = client.batches.create(
                input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
            )
            batch = _wait_status(client, batch.id, lambda status: status != "validating")
            queued_s = time.perf_counter() - started
            if batch.status != "in_progress":
                raise RuntimeError(f"batch {batch.id} ended {batch.status}: {batch.errors}")
            seen: dict[str, float] = {}
            batch = _wait_status(
                client,
                batch.id,
                lambda status: status not in ("in_progress", "finalizing"),
                seen,
                RUN_POLL,
            )
            ran_s = time.perf_counter() - started
            finalizing_s = seen[batch.status] - seen.get("finalizing", seen[batch.status])
        hwm = peak_rss_mb(server.pid)
        if batch.status != "completed" or batch.request_counts.completed != lines:
            raise RuntimeError(f"batch {batch.id} ended {batch.status}: {batch.request_counts}")
        first, whole, got = _download(client, batch.output_file_id)
        if got != lines:
            raise RuntimeError(f"the output file has {got} lines, expected {lines}")
    size_mb = len(data) / 1e6
    return [
        Figure(
            "openai_batch_queued",
            f"{lines:,}-line batch: upload + validate + all jobs queued",
            queued_s,
            "s",
            at_most(10),
            bound="server CPU: validating every line once, inserting the jobs in chunks",
            detail=(
                f"{size_mb:.1f} MB file; upload {upload_s:.2f} s, then validation and queueing "
                f"{queued_s - upload_s:.2f} s; 2 nodes x 16 idle and taking jobs once released"
            ),
        ),
        Figure(
            "openai_batch_rss",
            "server RSS while taking that upload and running that batch",
            peak.peak,
            "MB",
            at_most(300),
            bound="the server's resident memory (peak of 20 ms samples)",
            detail=(
                f"before {rss_before:.0f} MB, sampled peak {peak.peak:.0f} MB, VmHWM {hwm:.0f} MB; "
                f"batch ran to completed in {ran_s:.1f} s ({lines / ran_s:.0f} lines/s), "
                f"finalizing (output file written) seen for {finalizing_s:.2f} s"
            ),
        ),
        Figure(
            "openai_output_first_byte",
            f"output file of {lines:,} lines: first byte",
            first,
            "s",
            at_most(1),
            bound="one stored part read",
            detail=f"SDK files.with_streaming_response.content, {got} lines",
        ),
        Figure(
            "openai_output_whole",
            f"output file of {lines:,} lines: whole file",
            whole,
            "s",
            at_most(5),
            bound="one stored 1 MB part per read, streamed",
            detail=f"SDK files.with_streaming_response.content, {got} lines",
        ),
    ]


def _batch_run(server: Server, data: bytes, jobs: int) -> tuple[float, float, float, float]:
    """One batch through the SDK: (end to end s, queued after, completed after, finalizing)."""
    client = _sdk(server)
    started = time.perf_counter()
    uploaded = client.files.create(file=("ratio.jsonl", io.BytesIO(data)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
    )
    queued = _wait_status(client, batch.id, lambda status: status != "validating")
    queued_s = time.perf_counter() - started
    seen: dict[str, float] = {}
    batch = _wait_status(
        client, batch.id, lambda status: status in ("completed", "failed"), seen, RUN_POLL
    )
    finalizing_s = seen[batch.status] - seen.get("finalizing", seen[batch.status])
    done_s = time.perf_counter() - started
    _, _, got = _download(client, batch.output_file_id)
    if queued.status == "failed" or got != jobs:
        raise RuntimeError(f"batch {batch.id}: {batch.status}, {got} output lines")
    return time.perf_counter() - started, queued_s, done_s, finalizing_s


def run_ratio(ctx: Context) -> list[Figure]:
    """The same jobs natively (bulk) and as a batch, 2 nodes x 16, LLM 20 ms.

    Native, batch, native: the batch is compared with the mean of the two
    native runs around it, so a change of the shared host's load during the
    run weighs on both sides alike.
    """
    jobs = ctx.size(6000, 2000)
    data = batch_file(jobs, "ratio")
    natives: list[float] = []
    with ctx.cluster("openai-ratio") as cluster:
        server = cluster.server()
        server.start()
        standin = cluster.standin(LLM_DELAY)
        start_nodes(cluster, server, standin, 2, 16)
        for turn in ("native", "batch", "native"):
            time.sleep(1.0)  # the nodes are back in their long-polls
            if turn == "batch":
                batch_s, queued_s, done_s, finalizing_s = _batch_run(server, data, jobs)
                continue
            elapsed, counts = asyncio.run(_throughput(server, jobs, f"ratio{len(natives)}"))
            if counts.get("COMPLETED") != jobs:
                raise RuntimeError(f"native run: {counts}")
            natives.append(elapsed)
    native_s = sum(natives) / len(natives)
    ratio = native_s / batch_s * 100
    return [
        Figure(
            "openai_batch_ratio",
            "batch end to end ÷ the same jobs bulk-submitted natively, 2 nodes x 16, LLM 20 ms",
            ratio,
            "%",
            at_least(90),
            bound=(
                "the nodes' throughput, as natively, plus the batch's fixed costs: validation, "
                "up to batch_check_seconds before its end is seen, finalising"
            ),
            detail=(
                f"{jobs} jobs: native {natives[0]:.2f} s and {natives[1]:.2f} s "
                f"({jobs / native_s:.0f} jobs/s on their mean); batch {batch_s:.2f} s "
                f"({jobs / batch_s:.0f} jobs/s): queued after {queued_s:.2f} s, completed after "
                f"{done_s:.2f} s (finalizing seen for {finalizing_s:.2f} s), output downloaded "
                f"after {batch_s:.2f} s; the SDK looks at the running batch every {RUN_POLL} s"
            ),
        )
    ]


__all__ = ["run_batch", "run_ratio", "run_sync"]
