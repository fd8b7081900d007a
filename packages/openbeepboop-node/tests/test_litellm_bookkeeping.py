"""LiteLLM's per-call cost and logging switched off; a LiteLLM that moved them left alone.

The tests that call LiteLLM fail when an upgrade moves what
``litellm_bookkeeping`` reaches into: the node would still work, only slower.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import PROVIDER_KEY
from openbeepboop_node import litellm_bookkeeping
from openbeepboop_node.inference import load_litellm, price_unknown_model_as_free
from openbeepboop_testkit.standin import StandinLLM

MODEL = "openai/standin-model"


async def call(litellm: Any, llm: StandinLLM, content: str = "Hi") -> Any:
    with litellm_bookkeeping.unlogged():
        return await litellm.acompletion(
            model=MODEL,
            messages=[{"role": "user", "content": content}],
            api_base=llm.base_url,
            api_key=PROVIDER_KEY,
            num_retries=0,
            max_retries=0,
        )


@pytest.fixture
def success_log() -> Iterator[list[str]]:
    """A LiteLLM success callback (the node has none): what it was told about."""
    from litellm.integrations.custom_logger import CustomLogger

    litellm = load_litellm()
    seen: list[str] = []

    class Recorder(CustomLogger):  # type: ignore[misc]  # LiteLLM is untyped here
        async def async_log_success_event(
            self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
        ) -> None:
            seen.append(response_obj.choices[0].message.content)

    # LiteLLM copies a callback into further lists on first use: all are put back.
    before = {
        name: list(value)
        for name, value in vars(litellm).items()
        if "callback" in name and isinstance(value, list)
    }
    litellm.callbacks = [Recorder()]
    try:
        yield seen
    finally:
        for name, value in before.items():
            setattr(litellm, name, value)


async def test_a_call_is_neither_priced_nor_logged(llm: StandinLLM, success_log: list[str]) -> None:
    litellm = load_litellm()
    price_unknown_model_as_free(MODEL)
    response = await call(litellm, llm, "quiet")
    assert response.choices[0].message.content == "Echo: quiet"
    assert response.usage.total_tokens > 0  # the usage the node reports is the provider's
    # LiteLLM documents _hidden_params["response_cost"] as where its price goes.
    assert response._hidden_params["response_cost"] is None
    # The control: the same call unmarked is logged, so the callback does work.
    await litellm.acompletion(
        model=MODEL,
        messages=[{"role": "user", "content": "logged"}],
        api_base=llm.base_url,
        api_key=PROVIDER_KEY,
    )
    for _ in range(200):  # the success log runs on a task of LiteLLM's own
        if success_log:
            break
        await asyncio.sleep(0.01)
    assert success_log == ["Echo: logged"]


async def test_a_failed_call_still_raises_litellms_mapped_error(llm: StandinLLM) -> None:
    litellm = load_litellm()
    llm.configure(fail_status=429)
    with pytest.raises(litellm.RateLimitError):
        await call(litellm, llm)


def test_with_litellms_own_logs_on_its_bookkeeping_stays() -> None:
    # In a fresh interpreter: LiteLLM is set up once per process.
    probe = (
        "from openbeepboop_node import litellm_bookkeeping\n"
        "from openbeepboop_node.inference import load_litellm\n"
        "litellm = load_litellm()\n"
        "print(litellm.response_cost_calculator is litellm_bookkeeping._no_cost,"
        " litellm_bookkeeping._flag is None)"
    )
    out = {}
    for log in ("", "WARNING"):
        env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOG"}
        if log:
            env["LITELLM_LOG"] = log
        out[log] = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
        ).stdout.split()[-2:]
    assert out[""] == ["True", "False"]  # switched off
    assert out["WARNING"] == ["False", "True"]  # left as LiteLLM has it


@pytest.fixture
def no_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """The switch as it stands before :func:`switch_off` ran (restored after the test)."""
    monkeypatch.setattr(litellm_bookkeeping, "_flag", None)


@pytest.mark.usefixtures("no_flag")
def test_a_litellm_without_those_internals_is_left_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(litellm_bookkeeping, "INTERNAL_CONTEXT_MODULE", "litellm._not_there")
    stand_in = types.ModuleType("litellm")
    assert litellm_bookkeeping.switch_off(stand_in) == []
    assert not hasattr(stand_in, "response_cost_calculator")
    with litellm_bookkeeping.unlogged():  # a call then runs as it always did
        pass


@pytest.mark.usefixtures("no_flag")
def test_a_flag_that_is_no_longer_a_context_variable_is_not_touched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    moved = types.ModuleType("moved_context")
    moved.is_internal_call = False  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "moved_context", moved)
    monkeypatch.setattr(litellm_bookkeeping, "INTERNAL_CONTEXT_MODULE", "moved_context")
    stand_in = types.ModuleType("litellm")
    stand_in.response_cost_calculator = lambda **kwargs: 1.0  # type: ignore[attr-defined]
    assert litellm_bookkeeping.switch_off(stand_in) == ["cost calculation"]
    assert stand_in.response_cost_calculator() is None  # type: ignore[attr-defined]
    with litellm_bookkeeping.unlogged():
        pass
    assert moved.is_internal_call is False  # type: ignore[attr-defined]


def test_the_flag_holds_only_inside_and_for_tasks_started_there() -> None:
    flag = litellm_bookkeeping._internal_call_flag()
    load_litellm()
    assert flag is not None and litellm_bookkeeping._flag is flag

    async def seen_by_a_task() -> bool:
        return flag.get()

    async def main() -> tuple[bool, bool, bool]:
        with litellm_bookkeeping.unlogged():
            inside = await asyncio.wait_for(seen_by_a_task(), 5)
        return flag.get(), inside, await seen_by_a_task()

    assert asyncio.run(main()) == (False, True, False)
