"""The node's loop against a fake queue (loopback HTTP) and the real stand-in LLM via LiteLLM."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest
import tomli_w
from click.testing import CliRunner
from conditions import wait_for
from conftest import PROVIDER_KEY
from fake_queue import (
    DROP,
    FETCH,
    NODE_KEY,
    SUBMIT,
    FakeQueue,
    FakeQueueServer,
    Received,
    Reply,
)
from openbeepboop_node import queue_client, worker
from openbeepboop_node.cli import main
from openbeepboop_node.cli.errors import EXIT_FAILURE
from openbeepboop_node.exceptions import KeyRejectedError, SpoolError
from openbeepboop_node.prefetch import PrefetchSizer
from openbeepboop_node.spool import OutcomeKey, Spool
from openbeepboop_node.worker import Node
from openbeepboop_schemas import MAX_FETCH_JOBS, ChatCompletion, Outcome
from openbeepboop_testkit.standin import StandinLLM


async def start(node: Node) -> asyncio.Task[object]:
    return asyncio.create_task(node.run())


async def test_runs_jobs_and_delivers_results(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    ids = [fake.add_job(f"prompt {i}") for i in range(10)]
    node = make_node(concurrency=4)
    task = await start(node)
    await wait_for(lambda: len(fake.results()) == 10, what="10 results")
    node.stop()
    summary = await task
    assert summary.completed == 10
    for job_id, i in zip(ids, range(10), strict=True):
        result = ChatCompletion.model_validate(fake.results()[job_id]["result"])
        assert result.choices[0].message.content == f"Echo: prompt {i}"
    assert llm.prompt_counts() == {f"prompt {i}": 1 for i in range(10)}
    # Never more jobs asked for than the node has room for (4 slots and at
    # most as many prefetched by default); results travel in batches.
    assert node.config.prefetch_leases() == 4
    assert all(f["max_jobs"] <= 8 for f in fake.fetches)
    assert sum(len(s["outcomes"]) for s in fake.submits) == 10
    assert len(Spool(node.config.resolved_spool_path())) == 0


async def test_fetches_more_as_slots_free_up(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    llm.configure(delay=0.3)
    for i in range(6):
        fake.add_job(f"p{i}")
    node = make_node(concurrency=3, prefetch=0)
    task = await start(node)
    await wait_for(lambda: len(fake.results()) == 6, what="6 results")
    node.stop()
    await task
    # One request claims several jobs at once (as many as there are slots).
    assert any(len(f) and f["max_jobs"] == 3 for f in fake.fetches)
    assert len(llm.calls()) == 6


@pytest.mark.parametrize("fetch_linger", [0.0, 1.0])
async def test_busy_node_waits_for_more_free_slots_before_fetching(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node], fetch_linger: float
) -> None:
    llm.configure(delay=0.5)
    fake.add_job("first")
    node = make_node(concurrency=4, fetch_linger=fetch_linger, prefetch=0)
    task = await start(node)
    await wait_for(lambda: len(llm.calls()) == 1, what="the first call")
    # The first call keeps its 0.5 s. The others' 0.6 s stay well inside the
    # 1 s linger, so with it a wait always ends because a second slot came
    # free, never because it ran out while a job overran its time.
    llm.configure(delay=0.6)
    for i in range(3):
        fake.add_job(f"slow {i}")
    await wait_for(lambda: len(llm.calls()) == 4, what="all slots busy")
    for i in range(4):
        fake.add_job(f"later {i}")
    await wait_for(lambda: len(fake.results()) == 8, what="8 results")
    node.stop()
    await task
    asked = [f["max_jobs"] for f in fake.fetches]
    # An idle node asks at once (for every slot); a busy one, when "first" ends
    # while three jobs still run, either asks for its one free slot at once or
    # waits for the others so that one fetch brings several leases.
    assert asked[0] == 4
    assert (1 in asked) == (fetch_linger == 0), asked


def most_calls_at_once(llm: StandinLLM) -> int:
    """The highest number of LLM calls that were in flight together."""
    events = []
    for call in llm.calls():
        assert call.answered_at is not None, "a call never got its answer"
        events += [(call.timestamp, 1), (call.answered_at, -1)]
    in_flight = peak = 0
    for _, step in sorted(events, key=lambda event: (event[0], event[1])):
        in_flight += step
        peak = max(peak, in_flight)
    return peak


async def test_prefetched_leases_wait_for_a_slot(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    llm.configure(delay=0.3)
    for i in range(10):
        fake.add_job(f"p{i}")
    node = make_node(concurrency=2, prefetch=3)
    task = await start(node)
    # Two calling their LLM, one more leased and waiting in the node (jobs
    # this slow never need more than one waiting).
    await wait_for(lambda: node.held_jobs == 3, what="3 leases held")
    assert node.running_jobs == 2
    await wait_for(lambda: len(fake.results()) == 10, what="10 results")
    node.stop()
    summary = await task
    assert summary.completed == 10
    assert fake.fetches[0]["max_jobs"] == 3
    assert all(f["max_jobs"] <= 3 for f in fake.fetches)
    # concurrency bounds the LLM calls, whatever the node holds.
    assert most_calls_at_once(llm) == 2
    assert sorted(llm.prompt_counts().values()) == [1] * 10


async def test_shutdown_hands_prefetched_leases_back_at_once(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    llm.configure(delay=1.0)
    first = fake.add_job("first")
    waiting = fake.add_job("waiting")
    fake.add_job("queued")
    node = make_node(concurrency=1, prefetch=2)
    task = await start(node)
    await wait_for(lambda: node.held_jobs == 2 and len(llm.calls()) == 1, what="2 leases held")
    node.stop()
    summary = await task
    # The running job finished within the grace period; the one that never
    # got a slot was released (requeued for any node), not run.
    assert summary.completed == 1 and summary.aborted == 0
    assert summary.released == 1
    assert first in fake.results()
    assert fake.released == [waiting]
    assert llm.prompt_counts() == {"first": 1}


async def test_a_cancelled_prefetched_job_never_reaches_the_llm(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    llm.configure(delay=1.0)
    running = fake.add_job("running")
    waiting = fake.add_job("waiting")
    node = make_node(concurrency=1, prefetch=1, heartbeat_interval=0.05)
    task = await start(node)
    await wait_for(lambda: node.held_jobs == 2, what="2 leases held")
    with fake.lock:
        fake.cancelled.add(waiting)
    # The next heartbeat says so; the lease is dropped while it waits.
    await wait_for(lambda: node.held_jobs == 1, what="the cancelled lease to go")
    await wait_for(lambda: running in fake.results(), what="the running job's result")
    node.stop()
    await task
    assert llm.prompt_counts() == {"running": 1}
    assert waiting not in fake.outcomes


async def test_a_busy_node_with_slow_fetches_holds_more_leases(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    # Instant LLM answers, fetches that take 100 ms: one waiting lease would
    # leave the slots idle for most of every round trip.
    fake.fetch_delay = 0.1
    for i in range(60):
        fake.add_job(f"p{i}")
    node = make_node(concurrency=2, prefetch=6)
    task = await start(node)
    await wait_for(lambda: len(fake.results()) == 60, what="60 results")
    node.stop()
    await task
    asked = [f["max_jobs"] for f in fake.fetches]
    assert asked[0] == 3  # an idle node: its slots and one lease to wait
    assert max(asked) > 3, asked  # the buffer grew with the round trip
    assert max(asked) <= 8, asked  # never beyond the slots and the limit
    assert most_calls_at_once(llm) <= 2


async def test_slow_jobs_keep_one_lease_waiting_whatever_the_limit(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    llm.configure(delay=0.3)
    for i in range(8):
        fake.add_job(f"p{i}")
    node = make_node(concurrency=2, prefetch=6)
    task = await start(node)
    most_held = 0
    while len(fake.results()) < 8:
        most_held = max(most_held, node.held_jobs)
        await asyncio.sleep(0.005)
    node.stop()
    await task
    # Room for 8, but jobs that take 300 ms each need one in reserve at most.
    assert most_held == 3
    assert all(f["max_jobs"] <= 3 for f in fake.fetches)


class PinnedSizer(PrefetchSizer):
    """A prefetch sizer whose target the test sets, and which never hurries a fetch."""

    pinned = 1

    @property
    def target(self) -> int:
        return self.pinned

    def fetch_now(self, waiting: int) -> bool:
        return False


async def test_room_that_shrinks_while_the_node_lingers_is_not_fetched_for(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    llm.configure(delay=1.0)
    fake.ignore_routing = True
    fake.add_job("fails at once", model="gpt-9")
    slow = [fake.add_job(f"slow {i}") for i in range(5)]
    node = make_node(concurrency=4, fetch_linger=0.5)
    sizer = node._prefetch = PinnedSizer(4)
    task = await start(node)
    # Room 5, held 4 after the failure: the node lingers for a second free place...
    await wait_for(lambda: node.summary.failed == 1 and node.held_jobs == 4, what="one failure")
    sizer.pinned = 0  # ...while the buffer it wants shrinks to nothing: no room at all.
    await wait_for(lambda: all(job_id in fake.results() for job_id in slow), what="5 results")
    node.stop()
    await task
    assert all(f["max_jobs"] >= 1 for f in fake.fetches)


async def test_a_fetch_never_asks_for_more_than_the_contract_allows(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    job_id = fake.add_job("one")
    node = make_node(concurrency=MAX_FETCH_JOBS)  # room: the slots and a lease more
    task = await start(node)
    await wait_for(lambda: job_id in fake.results(), what="the result")
    node.stop()
    await task
    assert fake.fetches[0]["max_jobs"] == MAX_FETCH_JOBS


async def test_unknown_model_is_a_permanent_error_and_never_reaches_the_llm(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    fake.ignore_routing = True  # a server that hands out a model the node never declared
    job_id = fake.add_job("hello", model="gpt-9")
    node = make_node()
    task = await start(node)
    await wait_for(lambda: job_id in fake.errors(), what="the error outcome")
    node.stop()
    await task
    assert fake.fetches[0]["models"] == ["standin"]
    error = fake.errors()[job_id]["error"]
    assert error["retryable"] is False
    assert error["type"] == "model_not_served"
    assert "gpt-9" in error["message"]
    assert llm.calls() == []


async def test_wildcard_model_substitutes_the_job_model(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    job_id = fake.add_job("hi", model="anything")
    node = make_node(
        models=[
            {
                "name": "*",
                "litellm_model": "openai/{model}",
                "api_base": llm.base_url,
                "api_key": "x",
            }
        ]
    )
    task = await start(node)
    await wait_for(lambda: job_id in fake.results(), what="the result")
    node.stop()
    await task
    assert fake.fetches[0]["models"] == ["*"]
    assert [c.model for c in llm.calls()] == ["anything"]


async def test_provider_errors_are_reported_with_retryable_flag(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    llm.configure(fail_prompts=("BAD",))
    bad = fake.add_job("this is BAD")
    node = make_node()
    task = await start(node)
    await wait_for(lambda: bad in fake.errors(), what="the error")
    node.stop()
    summary = await task
    error = fake.errors()[bad]["error"]
    assert error["retryable"] is False
    assert error["status_code"] == 400
    assert "stand-in provider rejected this prompt permanently" in error["message"]
    assert summary.failed == 1


async def test_slow_job_keeps_its_lease_through_heartbeats(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    fake.lease_seconds = 0.3  # heartbeat every 0.1 s
    llm.configure(delay=1.0)
    job_id = fake.add_job("slow")
    node = make_node()
    task = await start(node)
    await wait_for(lambda: job_id in fake.results(), what="the slow result")
    node.stop()
    await task
    beats = fake.heartbeat_leases().count(job_id)
    assert beats >= 3, beats
    assert [a["ack"] for a in fake.acks] == ["accepted"]


async def test_heartbeat_cancelled_aborts_the_llm_call(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    fake.lease_seconds = 0.3
    llm.configure(delay=60.0)
    job_id = fake.add_job("long")
    node = make_node()
    task = await start(node)
    await wait_for(lambda: node.running_jobs == 1, what="the job to start")
    fake.cancelled.add(job_id)
    await wait_for(lambda: node.running_jobs == 0, timeout=10, what="the job to be aborted")
    assert node.summary.aborted == 1
    # Nothing is delivered for a cancelled job, and the node keeps working.
    llm.configure(delay=0.0)
    other = fake.add_job("next")
    await wait_for(lambda: other in fake.results(), what="the next job")
    node.stop()
    await task
    assert job_id not in fake.outcomes
    assert [s["outcomes"][0]["job_id"] for s in fake.submits] == [other]


async def test_lost_lease_aborts_the_job(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    fake.lease_seconds = 0.3
    llm.configure(delay=60.0)
    job_id = fake.add_job("long")
    node = make_node()
    task = await start(node)
    await wait_for(lambda: node.running_jobs == 1, what="the job to start")
    fake.lost.add(job_id)
    await wait_for(lambda: node.running_jobs == 0, timeout=10, what="the job to be aborted")
    node.stop()
    await task
    assert job_id not in fake.outcomes


def job_lines(caplog: pytest.LogCaptureFixture, job_id: str) -> list[str]:
    """The log lines that begin with the job (its job lines)."""
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"job {job_id} ")]


def stale_submits(fake: FakeQueue, ready: Callable[[], bool]) -> Callable[[Received], Reply | None]:
    """The fake queue, hanging up on submits until ``ready()``, then answering them ``stale``.

    As the server answers for a job cancelled while it ran (the node sends
    a submit it got no answer to again).
    """

    def respond(request: Received) -> Reply | None:
        if request.path != SUBMIT:
            return fake.respond(request)
        if not ready():
            return DROP
        outcomes = request.json()["outcomes"]
        acks = [{"job_id": o["job_id"], "ack": "stale", "status": "CANCELLED"} for o in outcomes]
        return Reply(200, {"acks": acks})

    return respond


# spool_after 0: on disk while it is sent, so "completed" may be logged before the ack.
@pytest.mark.parametrize("spool_after", [0.5, 0.0])
async def test_a_result_the_server_did_not_keep_is_logged_and_counted_as_not_kept(
    fake: FakeQueue,
    served: FakeQueueServer,
    llm: StandinLLM,
    make_node: Callable[..., Node],
    caplog: pytest.LogCaptureFixture,
    spool_after: float,
) -> None:
    job_id = fake.add_job("cancelled while it ran")
    node = make_node(spool_after=spool_after)
    spool = Spool(node.config.resolved_spool_path())
    on_disk = spool_after == 0
    # On disk: answered once the node has said "completed" (the result is durable).
    ready = (lambda: node.summary.completed == 1) if on_disk else (lambda: True)
    served.respond = stale_submits(fake, ready)
    with caplog.at_level(logging.INFO, logger="openbeepboop_node"):
        task = await start(node)
        await wait_for(lambda: node.summary.not_kept == 1, what="the job to be counted")
        node.stop()
        summary = await task
    assert (summary.completed, summary.failed, summary.not_kept) == (0, 0, 1)
    *first, last = job_lines(caplog, job_id)
    assert last.endswith(
        "not kept (stale: the lease had expired, or the job was already finished or "
        "cancelled; the job is CANCELLED)"
    ), last
    assert "tokens=" in last
    assert [line.endswith(" completed") for line in first] == ([True] if on_disk else [])
    assert len(spool) == 0


async def test_shutdown_lets_running_jobs_finish(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    llm.configure(delay=0.5)
    job_id = fake.add_job("finish me")
    node = make_node(shutdown_grace=20)
    task = await start(node)
    await wait_for(lambda: node.running_jobs == 1, what="the job to start")
    node.stop()
    summary = await task
    assert job_id in fake.results()
    assert summary.completed == 1 and summary.released == 0


async def test_shutdown_releases_jobs_that_outlast_the_grace_period(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    llm.configure(delay=60.0)
    job_ids = [fake.add_job(f"forever {i}") for i in range(2)]
    node = make_node(shutdown_grace=0.2)
    task = await start(node)
    await wait_for(lambda: node.running_jobs == 2, what="both jobs to start")
    node.stop()
    summary = await asyncio.wait_for(task, 20)
    assert sorted(fake.released) == job_ids
    assert summary.released == 2
    assert fake.outcomes == {}
    # Released jobs are back in the queue at once.
    assert sorted(j[0] for j in fake.queued) == job_ids


async def test_a_grace_period_of_zero_releases_running_jobs_at_once(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    llm.configure(delay=60.0)
    job_id = fake.add_job("forever")
    node = make_node(shutdown_grace=0)
    task = await start(node)
    await wait_for(lambda: len(llm.calls()) == 1, what="the job to reach the LLM")
    node.stop()
    # 0 means "do not wait", not "wait without limit".
    summary = await asyncio.wait_for(task, 20)
    assert summary.released == 1 and summary.aborted == 1
    assert fake.released == [job_id]


async def finished_while_submits_fail(
    fake: FakeQueue, node: Node, prompt: str
) -> tuple[list[str], asyncio.Task[object]]:
    """Three jobs that ``node`` (started here) finished while the server took no submits."""
    ids = [fake.add_job(f"{prompt} {i}") for i in range(3)]
    fake.down_paths = {SUBMIT}
    task = await start(node)
    await wait_for(lambda: node.summary.completed == 3, what="3 completions")
    return ids, task


async def test_results_survive_an_outage_and_the_llm_is_not_called_again(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    node = make_node()
    ids, task = await finished_while_submits_fail(fake, node, "outage")
    spool = Spool(node.config.resolved_spool_path())
    await wait_for(lambda: len(spool) == 3, what="3 spooled results")
    assert fake.outcomes == {}
    fake.down_paths = set()
    await wait_for(lambda: len(fake.results()) == 3, what="delivery after the outage")
    node.stop()
    await task
    assert sorted(fake.results()) == ids
    assert llm.prompt_counts() == {f"outage {i}": 1 for i in range(3)}
    assert len(spool) == 0


async def test_spooled_results_are_delivered_and_counted_by_the_next_run(
    fake: FakeQueue,
    llm: StandinLLM,
    make_node: Callable[..., Node],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = make_node(shutdown_grace=0.5)
    ids, task = await finished_while_submits_fail(fake, first, "restart")
    first.stop()
    summary = await task
    assert summary.undelivered == 3
    assert fake.outcomes == {}

    fake.down_paths = set()
    second = make_node()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="openbeepboop_node"):
        task = await start(second)
        await wait_for(lambda: len(fake.results()) == 3, what="delivery by the second run")
        await wait_for(lambda: second.summary.completed == 3, what="the second run's count")
        second.stop()
        summary = await task
    assert sorted(fake.results()) == ids
    assert llm.prompt_counts() == {f"restart {i}": 1 for i in range(3)}
    assert len(Spool(second.config.resolved_spool_path())) == 0
    # Counted, and each logged once, by the run that delivered them.
    assert (summary.completed, summary.failed, summary.undelivered) == (3, 0, 0)
    for job_id in ids:
        (line,) = job_lines(caplog, job_id)
        assert line.startswith(f"job {job_id} (from the spool) tokens=") and line.endswith(
            " completed"
        ), line


async def test_releases_the_server_never_got_are_not_counted_and_go_to_the_next_run(
    fake: FakeQueue,
    llm: StandinLLM,
    make_node: Callable[..., Node],
    caplog: pytest.LogCaptureFixture,
) -> None:
    llm.configure(delay=1.0)
    first_job = fake.add_job("running")
    waiting = fake.add_job("prefetched")
    first = make_node(concurrency=1, prefetch=1, shutdown_grace=2)
    with caplog.at_level(logging.INFO, logger="openbeepboop_node"):
        task = await start(first)
        await wait_for(lambda: first.held_jobs == 2, what="one job running, one waiting")
        fake.down_paths = {SUBMIT}  # a partition: nothing the node sends arrives
        first.stop()
        summary = await task
    # The prefetched lease's release never reached the server: not counted
    # as released, and said so, with when the server will take it back.
    assert fake.released == [] and fake.outcomes == {}
    assert (summary.released, summary.undelivered_releases, summary.undelivered) == (0, 1, 1)
    (line,) = [r.getMessage() for r in caplog.records if "release(s) not" in r.getMessage()]
    said = re.fullmatch(
        r"1 lease release\(s\) not delivered: the server requeues those jobs when their leases "
        r"expire, in about (\d+) s, counting an attempt; kept in .*: a start before then "
        r"releases them at once, with no attempt counted",
        line,
    )
    assert said is not None and 0 < int(said[1]) <= fake.lease_seconds, line
    spool = Spool(first.config.resolved_spool_path())
    assert sorted((o.job_id, o.kind) for o in spool.pending()) == [
        (first_job, "result"),
        (waiting, "release"),
    ]

    # The next start delivers it before its lease expires: requeued at once.
    fake.down_paths = set()
    second = make_node(concurrency=1, prefetch=0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="openbeepboop_node"):
        task = await start(second)
        await wait_for(lambda: second.summary.released == 1, what="the release delivered")
        second.stop()
        summary = await task
    assert fake.released[0] == waiting
    assert first_job in fake.results()
    assert job_lines(caplog, waiting)[0] == (
        f"job {waiting} (from the spool) released (requeued, no attempt counted)"
    )
    assert "delivering 1 result(s) and 1 lease release(s) kept from an earlier run" in caplog.text


async def test_server_down_is_logged_once_and_recovery_once(
    fake: FakeQueue,
    llm: StandinLLM,
    make_node: Callable[..., Node],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.down = True
    node = make_node()
    with caplog.at_level(logging.INFO, logger="openbeepboop_node"):
        task = await start(node)
        # Several retries, with growing gaps, while it is down.
        await wait_for(lambda: len(fake.attempts) >= 4, what="retries")
        fake.down = False
        job_id = fake.add_job("after the outage")
        await wait_for(lambda: job_id in fake.results(), what="work after the outage")
        node.stop()
        await task
    down = [r for r in caplog.records if "unreachable" in r.getMessage()]
    back = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(down) == 1 and len(back) == 1
    assert node.config.api_key.get_secret_value() not in caplog.text


def sent(fake: FakeQueue, path: str) -> int:
    """Requests on ``path`` that reached the fake, answered or not."""
    return sum(1 for attempted, _ in list(fake.attempts) if attempted == path)


def outage_lines(caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    """The log's "unreachable" lines and its "reachable again" lines."""
    messages = [r.getMessage() for r in caplog.records]
    down = [m for m in messages if "unreachable" in m]
    return down, [m for m in messages if "reachable again" in m]


async def test_no_new_jobs_are_fetched_while_results_cannot_be_delivered(
    fake: FakeQueue,
    llm: StandinLLM,
    make_node: Callable[..., Node],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A server that takes heartbeats (every 0.2 s) but no results, with plenty queued.
    llm.configure(delay=0.05)
    fake.lease_seconds = 0.6
    fake.down_paths = {SUBMIT}
    ids = [fake.add_job(f"piling up {i}") for i in range(30)]
    node = make_node(concurrency=1, prefetch=0)
    with caplog.at_level(logging.INFO, logger="openbeepboop_node"):
        task = await start(node)
        await wait_for(lambda: sent(fake, SUBMIT) >= 3, what="failed deliveries")
        fetched, beats = sent(fake, FETCH), len(fake.heartbeats)
        await wait_for(
            lambda: (
                sent(fake, SUBMIT) >= 8
                and len(fake.heartbeats) >= beats + 2
                and node.held_jobs == 0
            ),
            what="more failed deliveries, heartbeats answered between them, the jobs done",
        )
        # Only the job(s) fetched before the first delivery failed were run.
        assert sent(fake, FETCH) == fetched
        assert len(llm.calls()) <= 3 and len(fake.queued) >= 27
        fake.down_paths = set()
        await wait_for(lambda: len(fake.results()) == 30, what="every job once results flow")
        node.stop()
        await task
    assert sorted(fake.results()) == ids
    down, back = outage_lines(caplog)
    assert len(down) == 1 and len(back) == 1, (down, back)
    assert "no new jobs fetched until they are delivered" in down[0]


async def test_a_delivery_that_timed_out_is_given_longer_on_its_retry(
    fake: FakeQueue,
    served: FakeQueueServer,
    llm: StandinLLM,
    make_node: Callable[..., Node],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server whose writer takes 1 s per submit, and does it even for a node that hung
    up: cut at the first allowance (0.5 s, a quarter of the 2 s lease), the result is
    taken by a retry given longer, instead of being cut and resent for ever."""
    monkeypatch.setattr(queue_client, "MIN_LEASE_EXCHANGE_SECONDS", 0.25)
    fake.lease_seconds = 2.0
    done = threading.Event()

    def busy_writer(request: Received) -> Reply | None:
        if request.path == SUBMIT:
            done.wait(1.0)  # the server's work, hung up on or not
        return fake.respond(request)

    served.respond = busy_writer
    job_id = fake.add_job("slow to record")
    node = make_node()
    try:
        with caplog.at_level(logging.INFO, logger="openbeepboop_node"):
            task = await start(node)
            await wait_for(lambda: node.summary.acks, what="the server's ack")
            node.stop()
            await task
    finally:
        done.set()
    assert list(fake.results()) == [job_id]
    assert sent(fake, SUBMIT) >= 2  # the first one was cut
    assert node.summary.acks == {"duplicate": 1}
    down, back = outage_lines(caplog)
    assert len(down) == 1 and len(back) == 1, (down, back)
    assert "timed out talking to" in down[0]


async def test_a_spool_path_under_a_file_says_it_is_not_a_directory(
    tmp_path: Path, make_node: Callable[..., Node]
) -> None:
    (tmp_path / "afile").write_text("")
    node = make_node(spool_path=tmp_path / "afile" / "x.sqlite3")
    with pytest.raises(SpoolError) as raised:
        await node.run()
    assert str(raised.value) == (
        f"cannot open the result spool {tmp_path / 'afile' / 'x.sqlite3'}: "
        f"{tmp_path / 'afile'} is not a directory"
    )


async def test_work_the_node_waits_on_is_not_left_behind_when_the_wait_is_cancelled(
    make_node: Callable[..., Node],
) -> None:
    node = make_node()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    idle = asyncio.create_task(asyncio.Event().wait())
    waiting = asyncio.create_task(node._until_done(work(), [idle]))  # type: ignore[list-item]
    await started.wait()
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert cancelled.is_set()
    idle.cancel()
    await asyncio.gather(idle, return_exceptions=True)


async def test_an_idle_node_says_the_server_is_back_as_soon_as_it_answers(
    fake: FakeQueue,
    llm: StandinLLM,
    make_node: Callable[..., Node],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing held, so no heartbeat or delivery: only the fetch can tell. A
    # long-poll to the server just back answered only when its wait ended.
    fake.down = True
    node = make_node(fetch_wait=30.0)
    with caplog.at_level(logging.INFO, logger="openbeepboop_node"):
        task = await start(node)
        await wait_for(lambda: len(fake.attempts) >= 3, what="retries")
        fake.down = False
        await wait_for(
            lambda: "reachable again" in caplog.text,
            timeout=10.0,  # a third of the long-poll's wait
            what="the recovery to be logged",
        )
        node.stop()
        await task


async def test_refused_key_stops_the_node(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    fake.key = "sk-some-other-key"
    node = make_node()
    with pytest.raises(KeyRejectedError, match="rejected the API key"):
        await asyncio.wait_for(node.run(), 30)


async def test_batch_drains_the_queue_and_returns(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    for i in range(7):
        fake.add_job(f"batch {i}")
    node = make_node(concurrency=3)
    summary = await asyncio.wait_for(node.run_batch(), 60)
    assert summary.completed == 7
    assert len(fake.results()) == 7
    assert all(f["wait"] == 0 for f in fake.fetches)
    assert summary.undelivered == 0


async def test_a_job_leased_again_to_the_same_node_replaces_the_old_attempt(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    llm.configure(delay=60.0)
    job_id = fake.add_job("twice")
    node = make_node()
    task = await start(node)
    await wait_for(lambda: node.running_jobs == 1, what="the first attempt")
    # The slot is taken before the LLM call goes out: wait until the stand-in
    # holds the first call (with its 60 s delay) before making the LLM fast.
    await wait_for(lambda: len(llm.calls()) == 1, what="the first LLM call")
    # The first lease expired on the server and the job came back to this node.
    llm.configure(delay=0.0)
    lease = fake.leases[job_id]
    with fake.lock:
        fake.queued.append((job_id, lease.model, lease.request, 2))
    await wait_for(lambda: job_id in fake.results(), what="the second attempt's result")
    node.stop()
    summary = await task
    assert fake.results()[job_id]["lease_token"] == f"tok-{job_id}-2"
    assert summary.aborted == 1 and summary.completed == 1


async def test_a_job_leased_again_counts_once_among_the_running(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    llm.configure(delay=60.0)
    job_id = fake.add_job("twice")
    node = make_node(concurrency=4, shutdown_grace=0.1)
    task = await start(node)
    await wait_for(lambda: len(llm.calls()) == 1, what="the first LLM call")
    lease = fake.leases[job_id]
    with fake.lock:
        fake.queued.append((job_id, lease.model, lease.request, 2))
    await wait_for(lambda: len(llm.calls()) == 2, what="the second attempt's call")
    # Both attempts ran for a moment; only the new one counts as running and
    # held once the old one is cancelled (slots are tracked by task, not job id).
    assert node.running_jobs == 1
    assert node.held_jobs == 1
    node.stop()
    summary = await task
    assert summary.aborted == 2
    assert fake.released == [job_id]


class UnwritableSpool(Spool):
    """A spool on a disk that stays full."""

    def add(self, outcomes: Sequence[Outcome], forget: Iterable[OutcomeKey] = ()) -> None:
        raise sqlite3.OperationalError("database or disk is full")


def test_results_neither_delivered_nor_spooled_are_reported_lost_and_exit_1(
    tmp_path: Path,
    fake: FakeQueue,
    served: FakeQueueServer,
    llm: StandinLLM,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker, "Spool", UnwritableSpool)
    fake.add_job("done, nowhere to keep it")
    fake.down_paths = {"/internal/queue/submit"}
    config = tmp_path / "node.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "server_url": served.url,
                "api_key": NODE_KEY,
                "node_id": "lost-node",
                "backoff_initial": 0.05,
                "backoff_max": 0.2,
                "batch_give_up": 1.0,
                "spool_path": str(tmp_path / "spool.sqlite3"),
                "models": [
                    {
                        "name": "standin",
                        "litellm_model": "openai/standin-model",
                        "api_base": llm.base_url,
                        "api_key": PROVIDER_KEY,
                    }
                ],
            }
        )
    )
    result = CliRunner().invoke(main, ["batch", "--config", str(config)])
    assert result.exit_code == EXIT_FAILURE, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("openbeepboop-node: error: 1 result(s) neither delivered nor written")
    assert "database or disk is full" in last and "lost with this process" in last
    assert "kept in" not in result.stderr  # never claimed to be on disk
    assert "could not be delivered" not in result.stderr
    assert fake.outcomes == {}


def refusing(fake: FakeQueue, kinds: set[str]) -> Callable[[Received], Reply | None]:
    """The fake queue, answering 400 to a submit holding an outcome of these kinds."""

    def respond(request: Received) -> Reply | None:
        if request.path == SUBMIT and any(o["kind"] in kinds for o in request.json()["outcomes"]):
            return Reply(400, {"error": {"message": "not a chat.completion", "type": "x"}})
        return fake.respond(request)

    return respond


@pytest.mark.parametrize(
    ("refused", "spool_after"),
    [
        ({"result"}, 0.5),
        ({"result", "error"}, 0.5),
        # On disk while it is sent: may be logged "completed" before the refusal.
        ({"result"}, 0.0),
    ],
)
async def test_a_refused_result_is_delivered_as_its_failure_and_its_lease_let_go(
    fake: FakeQueue,
    served: FakeQueueServer,
    llm: StandinLLM,
    make_node: Callable[..., Node],
    refused: set[str],
    spool_after: float,
) -> None:
    served.respond = refusing(fake, refused)
    job_id = fake.add_job("refused")
    node = make_node(spool_after=spool_after)
    task = await start(node)
    # Counted (and logged) as what the server got: a failure, never "completed".
    await wait_for(lambda: node.summary.failed == 1, what="the job to finish")
    assert node.summary.completed == 0
    assert node._runner is not None
    # Not heartbeated for ever: the lease is no longer held.
    await wait_for(lambda: not node._runner.lease_refs(), what="the lease to be let go")
    node.stop()
    await task
    if "error" in refused:
        assert fake.outcomes == {}  # dropped: its lease expires at the server
    else:
        error = fake.errors()[job_id]["error"]
        assert error["type"] == "invalid_response" and error["retryable"] is False
        assert "HTTP 400" in error["message"] and "not a chat.completion" in error["message"]
