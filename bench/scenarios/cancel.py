"""Cancel reach: how soon a cancel of a running job closes the node's LLM call.

One real node (concurrency 1) against the default 300 s lease, so its
heartbeat comes every 100 s and cannot be what carries the cancel; the
stand-in answers after 120 s. Per sample: a job is submitted, its call
reaches the stand-in, the harness waits :data:`RUNNING_SECONDS` (past the
node's one second before a lease joins its watch), then cancels it through
``POST /v1/jobs/{id}/cancel``. Timed from the start of the cancel request
to the moment the stand-in sees the call's connection closed (its own
``hung_up_at``; one wall clock for both processes), and on to the next
job's call arriving at the stand-in (the slot was freed and refilled).
Then the same with the cancel sent as soon as the call arrived (the job's
first second: the lease is not watched yet).
"""

from __future__ import annotations

import time

import httpx
from harness.api import chat_request, headers
from harness.cluster import Standin
from harness.figures import Figure, at_most, median
from openbeepboop_schemas import CHAT_COMPLETIONS_PATH, job_cancel_path
from openbeepboop_testkit.processes import wait_until
from openbeepboop_testkit.standin import Call

from scenarios import Context
from scenarios.e2e import start_nodes

#: Long enough that no answer ever comes within a sample.
LLM_DELAY = 120.0
#: How long a job runs before it is cancelled (its lease is watched after 1 s).
RUNNING_SECONDS = 1.5
STEP_TIMEOUT = 60.0


def _call(standin: Standin, prompt: str) -> Call | None:
    found = [call for call in standin.control.calls() if call.prompt == prompt]
    return found[0] if found else None


def _hung_up_at(standin: Standin, prompt: str) -> float | None:
    call = _call(standin, prompt)
    return call.hung_up_at if call is not None else None


def _sample(
    http: httpx.Client, standin: Standin, index: int, running: float
) -> tuple[float, float]:
    """(cancel → LLM call closed, cancel → next job's call arrived), in seconds."""
    body = chat_request(index, "cancel")
    prompt = body["messages"][0]["content"]
    job = http.post(CHAT_COMPLETIONS_PATH, json=body).json()
    wait_until(lambda: _call(standin, prompt), STEP_TIMEOUT, "the job's LLM call")
    if running:
        time.sleep(running)
    cancelled_at = time.time()
    answer = http.post(job_cancel_path(job["id"])).json()
    if answer["status"] != "CANCELLED":
        raise RuntimeError(f"job {job['id']} is {answer['status']} after its cancel")
    closed = wait_until(
        lambda: _hung_up_at(standin, prompt), STEP_TIMEOUT, "the node to close the cancelled call"
    )
    nxt = chat_request(index, "next")
    http.post(CHAT_COMPLETIONS_PATH, json=nxt)
    arrived = wait_until(
        lambda: _call(standin, nxt["messages"][0]["content"]), STEP_TIMEOUT, "the next call"
    )
    return closed - cancelled_at, arrived.timestamp - cancelled_at


def run(ctx: Context) -> list[Figure]:
    """Cancel a running job, again and again; how soon its LLM call is closed."""
    samples = ctx.size(20, 6)
    with ctx.cluster("cancel") as cluster:
        server = cluster.server()
        server.start()
        standin = cluster.standin(0.0)
        start_nodes(cluster, server, standin, 1, 1)  # warmed up: LiteLLM imported
        standin.set_delay(LLM_DELAY)
        watched: list[tuple[float, float]] = []
        early: list[tuple[float, float]] = []
        with httpx.Client(base_url=server.url, headers=headers(server.user_key)) as http:
            for _ in range(samples):
                for running, into in ((RUNNING_SECONDS, watched), (0.0, early)):
                    into.append(_sample(http, standin, len(watched) + len(early), running))
                    _drain(http, standin)
    reach = [closed for closed, _ in watched]
    refill = [arrived for _, arrived in watched]
    first = [closed for closed, _ in early]
    return [
        Figure(
            "cancel_reach",
            "cancel → running job's LLM call closed (300 s lease)",
            median(reach),
            "s",
            at_most(2.0),
            bound="the lease watch: a wake-up, one read, the node cancelling its task",
            detail=(
                f"{samples} samples, job running {RUNNING_SECONDS} s when cancelled; "
                f"max {max(reach):.3f} s; next job's call after median {median(refill):.3f} s "
                f"(max {max(refill):.3f}); cancelled in the job's first moment (not yet "
                f"watched): median {median(first):.3f} s, max {max(first):.3f} s; "
                "the heartbeat alone: up to 100 s"
            ),
        )
    ]


def _drain(http: httpx.Client, standin: Standin) -> None:
    """Cancel whatever the node is running (the next job), and wait until its slot is empty."""
    jobs = http.get("/v1/jobs", params={"status": "PROCESSING"}).json()["data"]
    for job in jobs:
        http.post(job_cancel_path(job["id"]))
    wait_until(
        lambda: all(
            call.hung_up_at is not None or call.answered_at is not None
            for call in standin.control.calls()
        ),
        STEP_TIMEOUT,
        "the node to be idle",
    )
