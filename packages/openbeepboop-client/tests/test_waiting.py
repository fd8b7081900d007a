"""Waiting for many jobs: long-polls with ``wait``, chunks, pacing, timeouts, progress."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import respx
from conftest import API_KEY, BASE_URL, REAL_MIN_WAIT_ROUND_SECONDS, entry_body
from openbeepboop import AsyncClient, Client, JobTimeoutError, _constants
from openbeepboop._waiting import WaitPlan
from openbeepboop_schemas import MAX_WAIT_SECONDS, PollEntry


class FakeQueue:
    """A poll endpoint over jobs that finish after a given number of polls each."""

    def __init__(self, finish_after: dict[str, int], final: str = "COMPLETED") -> None:
        self.finish_after = finish_after
        self.final = final
        self.seen: dict[str, int] = {}
        self.bodies: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        entries = []
        for job_id in body["ids"]:
            if job_id not in self.finish_after:
                entries.append(entry_body(job_id, "NOT_FOUND"))
                continue
            self.seen[job_id] = self.seen.get(job_id, 0) + 1
            done = self.seen[job_id] >= self.finish_after[job_id]
            entries.append(entry_body(job_id, self.final if done else "PROCESSING"))
        return httpx.Response(200, json=entries)


def test_wait_long_polls_and_does_not_spin(server: respx.MockRouter, client: Client) -> None:
    queue = FakeQueue({"job-1": 3, "job-2": 5})
    server.post("/v1/results/poll").mock(side_effect=queue)
    entries = client.jobs.wait(["job-1", "job-2"])
    assert [entry.status for entry in entries] == ["COMPLETED", "COMPLETED"]
    # One request per round, each a long-poll, and finished jobs are not asked again.
    assert len(queue.bodies) == 5
    assert all(0 < body["wait"] <= MAX_WAIT_SECONDS for body in queue.bodies)
    assert [body["ids"] for body in queue.bodies[3:]] == [["job-2"], ["job-2"]]


def test_long_poll_read_timeout_outlasts_the_wait(server: respx.MockRouter) -> None:
    route = server.post("/v1/results/poll").respond(200, json=[entry_body("job-1", "COMPLETED")])
    with Client(base_url=BASE_URL, api_key=API_KEY, timeout=5.0) as client:
        client.jobs.wait(["job-1"])
    timeout = route.calls.last.request.extensions["timeout"]
    assert timeout["read"] > MAX_WAIT_SECONDS


def test_a_server_that_ignores_wait_cannot_make_it_spin(
    server: respx.MockRouter, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_constants, "MIN_WAIT_ROUND_SECONDS", REAL_MIN_WAIT_ROUND_SECONDS)
    route = server.post("/v1/results/poll").respond(200, json=[entry_body("job-1", "PROCESSING")])
    started = time.monotonic()
    with pytest.raises(JobTimeoutError) as raised:
        client.jobs.wait(["job-1"], timeout=1.2)
    elapsed = time.monotonic() - started
    assert elapsed >= 1.1
    # Rounds are at least MIN_WAIT_ROUND_SECONDS apart: about 1.2 / 0.5 of them.
    assert 2 <= route.call_count <= 1.2 / REAL_MIN_WAIT_ROUND_SECONDS + 2
    assert raised.value.pending == ["job-1"]
    assert [entry.status for entry in raised.value.entries] == ["PROCESSING"]
    assert str(raised.value).startswith("job job-1 is still PROCESSING after waiting 1.2s")


def test_get_with_a_timeout_raises_job_timeout(server: respx.MockRouter, client: Client) -> None:
    server.post("/v1/results/poll").respond(200, json=[entry_body("job-1", "QUEUED")])
    with pytest.raises(JobTimeoutError):
        client.jobs.result("job-1", timeout=0.05)


def test_timeout_zero_still_polls_once(server: respx.MockRouter, client: Client) -> None:
    route = server.post("/v1/results/poll").respond(200, json=[entry_body("job-1", "COMPLETED")])
    assert client.jobs.wait(["job-1"], timeout=0)[0].status == "COMPLETED"
    assert route.call_count == 1
    assert "wait" not in json.loads(route.calls.last.request.content)


def test_thousands_of_ids_long_poll_one_chunk_and_check_the_rest(
    server: respx.MockRouter, client: Client
) -> None:
    ids = [f"job-{n}" for n in range(2_500)]
    # Everything in the first chunk finishes on its first poll; the rest on their second.
    queue = FakeQueue({job_id: (1 if n < 1_000 else 2) for n, job_id in enumerate(ids)})
    server.post("/v1/results/poll").mock(side_effect=queue)
    entries = client.jobs.wait(ids)
    assert [entry.id for entry in entries] == ids
    assert all(entry.status == "COMPLETED" for entry in entries)
    waits = [body.get("wait") for body in queue.bodies]
    sizes = [len(body["ids"]) for body in queue.bodies]
    # Round 1: long-poll 1000, plain poll 1000 + 500. Round 2: long-poll 1000, plain 500.
    assert sizes == [1_000, 1_000, 500, 1_000, 500]
    assert waits[0] and waits[3] and waits[1] is None and waits[2] is None and waits[4] is None


def test_duplicate_and_unknown_ids(server: respx.MockRouter, client: Client) -> None:
    queue = FakeQueue({"job-1": 1})
    server.post("/v1/results/poll").mock(side_effect=queue)
    entries = client.jobs.wait(["job-1", "job-zzz", "job-1"])
    assert [entry.status for entry in entries] == ["COMPLETED", "NOT_FOUND", "COMPLETED"]
    assert len(queue.bodies) == 1 and queue.bodies[0]["ids"] == ["job-1", "job-zzz"]


def test_progress_bar_goes_to_stderr(
    server: respx.MockRouter, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    server.post("/v1/results/poll").mock(side_effect=FakeQueue({"job-1": 1, "job-2": 2}))
    client.jobs.wait(["job-1", "job-2"], progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "2/2" in captured.err and "COMPLETED=2" in captured.err
    # While job-2 ran, the bar said so.
    assert "COMPLETED=1; queued=0, running=1" in captured.err


async def test_async_wait_long_polls(server: respx.MockRouter) -> None:
    queue = FakeQueue({"job-1": 2, "job-2": 3}, final="FAILED")
    server.post("/v1/results/poll").mock(side_effect=queue)
    async with AsyncClient(base_url=BASE_URL, api_key=API_KEY) as client:
        entries = await client.jobs.wait(["job-1", "job-2"])
    assert [entry.status for entry in entries] == ["FAILED", "FAILED"]
    assert len(queue.bodies) == 3
    assert all(body["wait"] > 0 for body in queue.bodies)


async def test_async_wait_timeout(server: respx.MockRouter) -> None:
    server.post("/v1/results/poll").respond(200, json=[entry_body("job-1", "QUEUED")])
    async with AsyncClient(base_url=BASE_URL, api_key=API_KEY) as client:
        with pytest.raises(JobTimeoutError):
            await client.jobs.wait(["job-1"], timeout=0.05)


def test_on_final_hands_each_entry_over_as_it_finishes(
    server: respx.MockRouter, client: Client
) -> None:
    queue = FakeQueue({"job-1": 3, "job-2": 1, "job-3": 2})
    server.post("/v1/results/poll").mock(side_effect=queue)
    handed: list[tuple[str, int]] = []
    entries = client.jobs.wait(
        ["job-1", "job-2", "job-3"],
        on_final=lambda entry: handed.append((entry.id, len(queue.bodies))),
    )
    # In the order they finished, each in the round that saw it finish; none kept.
    assert handed == [("job-2", 1), ("job-3", 2), ("job-1", 3)]
    assert entries == []


def test_on_final_and_a_timeout_carry_only_the_unfinished(
    server: respx.MockRouter, client: Client
) -> None:
    server.post("/v1/results/poll").mock(side_effect=FakeQueue({"job-1": 1, "job-2": 10**6}))
    handed: list[PollEntry] = []
    with pytest.raises(JobTimeoutError) as caught:
        client.jobs.wait(["job-1", "job-2"], timeout=0.05, on_final=handed.append)
    assert [entry.id for entry in handed] == ["job-1"]
    assert caught.value.pending == ["job-2"]
    assert [entry.id for entry in caught.value.entries] == ["job-2"]


async def test_async_on_final(server: respx.MockRouter) -> None:
    server.post("/v1/results/poll").mock(side_effect=FakeQueue({"job-1": 2, "job-2": 1}))
    handed: list[PollEntry] = []
    async with AsyncClient(base_url=BASE_URL, api_key=API_KEY) as client:
        entries = await client.jobs.wait(["job-1", "job-2"], on_final=handed.append)
    assert [entry.id for entry in handed] == ["job-2", "job-1"]
    assert entries == []


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def entry(job_id: str, status: str) -> PollEntry:
    return PollEntry.model_validate(entry_body(job_id, status))


def test_plan_caps_the_wait_by_the_deadline() -> None:
    clock = FakeClock()
    plan = WaitPlan(["job-1"], timeout=12.0, clock=clock)
    assert plan.next_round()[0].wait == 12.0
    plan.record(["job-1"], [entry("job-1", "QUEUED")])
    clock.now += 10.0
    assert plan.next_round()[0].wait == pytest.approx(2.0)
    clock.now += 2.0
    with pytest.raises(JobTimeoutError):
        plan.next_round()


def test_plan_without_timeout_waits_the_maximum() -> None:
    plan = WaitPlan(["job-1"], timeout=None, clock=FakeClock())
    assert plan.next_round()[0].wait == MAX_WAIT_SECONDS


def test_plan_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_constants, "MIN_WAIT_ROUND_SECONDS", 0.5)
    clock = FakeClock()
    plan = WaitPlan(["job-1", "job-2"], timeout=None, clock=clock)
    plan.next_round()
    clock.now += 0.1
    assert (
        plan.record(["job-1", "job-2"], [entry("job-1", "COMPLETED"), entry("job-2", "QUEUED")])
        == 1
    )
    assert plan.pause() == pytest.approx(0.4)
    clock.now += 1.0
    assert plan.pause() == 0.0
    assert plan.tally == {"COMPLETED": 1}
    assert plan.pending == ["job-2"]


def test_a_result_left_out_of_a_large_answer_is_polled_again() -> None:
    plan = WaitPlan(["job-1", "job-2"], timeout=None, clock=FakeClock())
    plan.next_round()
    omitted = PollEntry.model_validate({**entry_body("job-2", "COMPLETED"), "result_omitted": True})
    assert plan.record(["job-1", "job-2"], [entry("job-1", "COMPLETED"), omitted]) == 1
    assert [call.ids for call in plan.next_round()] == [["job-2"]]
    assert plan.record(["job-2"], [entry("job-2", "COMPLETED")]) == 1
    assert plan.done
