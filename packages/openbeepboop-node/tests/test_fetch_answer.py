"""A fetch answer with one lease the node cannot read: the rest run, that one is handed back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from conditions import wait_for
from fake_queue import FakeQueue
from openbeepboop_node.fetch_answer import INVALID_LEASE, read_fetch_answer
from openbeepboop_node.worker import Node
from openbeepboop_testkit.standin import StandinLLM


async def test_the_good_leases_run_and_the_unreadable_one_is_handed_back(
    fake: FakeQueue,
    llm: StandinLLM,
    make_node: Callable[..., Node],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = [fake.add_job(f"good {i}") for i in range(2)]
    bad = fake.add_job("unreadable")
    claim = fake._fetch

    def corrupting(data: dict[str, Any]) -> list[dict[str, Any]]:
        leases = claim(data)
        for lease in leases:
            if lease["job_id"] == bad:  # a message role this node does not know
                lease["request"] = {"model": "standin", "messages": [{"role": "robot"}]}
        return leases

    monkeypatch.setattr(fake, "_fetch", corrupting)
    node = make_node(concurrency=4)
    task = asyncio.create_task(node.run())
    await wait_for(lambda: len(fake.results()) == 2 and bad in fake.errors(), what="outcomes")
    node.stop()
    summary = await task
    assert sorted(fake.results()) == good
    error = fake.errors()[bad]["error"]
    assert error["type"] == INVALID_LEASE and error["retryable"] is True
    assert "messages.0.role" in error["message"]
    assert summary.completed == 2 and summary.failed == 1
    assert llm.prompt_counts() == {"good 0": 1, "good 1": 1}  # never run


async def test_leases_beyond_what_was_asked_are_released_at_once(
    fake: FakeQueue,
    llm: StandinLLM,
    make_node: Callable[..., Node],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server answering 6 leases to ``max_jobs = 2`` cannot push the node past its room."""
    llm.configure(delay=30.0)  # the two jobs run hold their slots for the whole test
    jobs = [fake.add_job(f"job {i}") for i in range(6)]
    claim = fake._fetch
    asked: list[int] = []

    def greedy(data: dict[str, Any]) -> list[dict[str, Any]]:
        asked.append(data["max_jobs"])
        return claim({**data, "max_jobs": 100})  # whatever the node asked for

    monkeypatch.setattr(fake, "_fetch", greedy)
    node = make_node(concurrency=2, prefetch=0, shutdown_grace=0.0)
    task = asyncio.create_task(node.run())
    await wait_for(lambda: len(fake.released) == 4, what="the 4 extra leases released")
    await wait_for(lambda: len(llm.calls()) == 2, what="the 2 kept jobs calling")
    assert asked == [2]  # and, the node being full, no further fetch
    assert node.held_jobs == 2
    assert sorted(fake.released) == jobs[2:]
    assert sorted(llm.prompt_counts()) == ["job 0", "job 1"]
    warnings = [r.getMessage() for r in caplog.records if r.name.endswith("fetch_answer")]
    assert len(warnings) == 1
    assert "sent 6 lease(s) to a fetch for at most 2: handing 4 extra one(s) back" in warnings[0]
    node.stop()
    summary = await task
    assert summary.released == 6 and summary.failed == 0  # 4 extras, then 2 at the stop


def _lease(job_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "lease_token": f"tok-{job_id}",
        "lease_expires_at": 1e9,
        "lease_seconds": 30.0,
        "attempt": 1,
        "model": "m",
        "request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        **changes,
    }


def test_extras_of_an_answer_read_lease_by_lease_are_released_too() -> None:
    """With an unreadable lease in the answer, the first ``max_jobs`` items are kept."""
    items = [
        _lease("a"),
        _lease("b", request={"model": "m", "messages": [{"role": "robot"}]}),
        _lease("c", model=7),  # unreadable, but an extra: released all the same
        _lease("a"),  # the kept job named again: dropped, not released under its feet
        {"job_id": "nameless"},  # no usable ref: dropped
    ]
    answer = read_fetch_answer(json.dumps(items).encode(), max_jobs=2)
    assert [lease.job_id for lease in answer.leases] == ["a"]
    assert [outcome.job_id for outcome in answer.unreadable] == ["b"]
    assert [(r.job_id, r.lease_token) for r in answer.surplus] == [("c", "tok-c")]


def test_an_answer_within_max_jobs_has_no_surplus() -> None:
    body = json.dumps([_lease("a"), _lease("b")]).encode()
    assert read_fetch_answer(body, max_jobs=2).surplus == []
    assert len(read_fetch_answer(body).leases) == 2
