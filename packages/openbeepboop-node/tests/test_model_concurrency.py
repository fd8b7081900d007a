"""Per-model ``concurrency``: a capped model never holds more leases than its cap."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from conditions import wait_for
from conftest import PROVIDER_KEY
from fake_queue import FakeQueue
from openbeepboop_node.config import NodeConfig, parse_config
from openbeepboop_node.exceptions import ConfigError
from openbeepboop_node.fetching import models_to_ask
from openbeepboop_node.worker import Node
from openbeepboop_schemas import MAX_FETCH_JOBS
from openbeepboop_testkit.standin import StandinLLM


def model(name: str, llm: StandinLLM, cap: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "litellm_model": f"openai/{name}-up",
        "api_base": llm.base_url,
        "api_key": PROVIDER_KEY,
        "timeout": 20,
    }
    if cap is not None:
        entry["concurrency"] = cap
    return entry


def test_a_model_cap_must_fit_in_the_node(make_config: Callable[..., NodeConfig]) -> None:
    data = make_config().model_dump(mode="json")
    data["api_key"] = "sk-x"
    data["concurrency"] = 2
    data["models"][0]["concurrency"] = 3
    with pytest.raises(ConfigError, match="concurrency 3 is above the node's concurrency 2"):
        parse_config(data)
    data["models"][0]["concurrency"] = 0
    with pytest.raises(ConfigError, match=r"models\[0\]\.concurrency"):
        parse_config(data)


def test_the_fetcher_asks_only_for_models_with_room() -> None:
    caps = {"big": 2, "tiny": 1}
    held = {"big": 0, "tiny": 0}
    live = ["big", "small", "tiny"]
    # One fetch cannot say how many of each: never more than the fullest has room for.
    assert models_to_ask(live, caps, held) == (["big", "small", "tiny"], 1)
    held["tiny"] = 1
    assert models_to_ask(live, caps, held) == (["big", "small"], 2)
    held["big"] = 1
    assert models_to_ask(live, caps, held) == (["big", "small"], 1)
    held["big"] = 2
    assert models_to_ask(live, caps, held) == (["small"], MAX_FETCH_JOBS)
    assert models_to_ask(["big", "tiny"], caps, held) == ([], MAX_FETCH_JOBS)
    held["tiny"] = 0
    assert models_to_ask(["big", "tiny"], caps, held) == (["tiny"], 1)


def test_without_caps_the_fetch_list_is_the_live_list_as_it_is() -> None:
    live = ["a", "b"]
    models, most = models_to_ask(live, {}, {})
    assert models is live and most == MAX_FETCH_JOBS


def peak_calls_by_model(llm: StandinLLM) -> Counter[str]:
    """The most LLM calls of each upstream model that were in flight together."""
    events: list[tuple[float, int, str]] = []
    for call in llm.calls():
        assert call.answered_at is not None
        events += [(call.timestamp, 1, call.model), (call.answered_at, -1, call.model)]
    now: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    for _, step, name in sorted(events, key=lambda e: (e[0], e[1])):
        now[name] += step
        peak[name] = max(peak[name], now[name])
    return peak


async def test_a_capped_model_never_runs_more_than_its_cap_and_the_rest_stay_busy(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    llm.configure(delay=0.3)
    # Big jobs first in the queue: without the cap they would take every slot.
    jobs = [fake.add_job(f"big {i}", model="big") for i in range(6)]
    jobs += [fake.add_job(f"small {i}", model="small") for i in range(8)]
    node = make_node(concurrency=3, models=[model("big", llm, 1), model("small", llm)])
    most_held = Counter[str]()

    async def watch() -> None:
        while True:
            most_held["big"] = max(most_held["big"], node.held_by_model().get("big", 0))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    task = asyncio.create_task(node.run())
    await wait_for(lambda: set(jobs) <= set(fake.results()), what="every result")
    node.stop()
    await task
    watcher.cancel()
    peak = peak_calls_by_model(llm)
    assert peak["big-up"] == 1
    assert peak["small-up"] >= 2  # the small model used the slots big could not
    assert most_held["big"] == 1  # running and prefetched together
    for fetch in fake.fetches:
        if "big" in fetch["models"]:
            assert fetch["max_jobs"] <= 1
        # A full "big" is left out of the claim but still declared to the registry.
        assert set(fetch.get("serves") or fetch["models"]) == {"big", "small"}
