"""A fetch answer with one lease the node cannot read: the rest run, that one is handed back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from conditions import wait_for
from fake_queue import FakeQueue
from openbeepboop_node.fetch_answer import INVALID_LEASE
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
