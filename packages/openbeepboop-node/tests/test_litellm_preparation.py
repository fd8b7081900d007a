"""LiteLLM's request building on the event loop; everything else still on a thread.

The tests that call LiteLLM fail when an upgrade changes how ``acompletion``
hands ``completion`` to the executor: the node would still work, only with
the thread hop back.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from typing import Any

import pytest
from conftest import PROVIDER_KEY
from openbeepboop_node import litellm_preparation
from openbeepboop_node.inference import MAX_INLINE_PREPARATION_CHARS, Inference
from openbeepboop_node.litellm_preparation import (
    PreparationExecutor,
    inline_preparation,
    install,
)
from openbeepboop_node.model_routes import ModelRoute
from openbeepboop_schemas import ChatCompletionRequest
from openbeepboop_testkit.standin import StandinLLM


def completion(**_kwargs: Any) -> int:
    """Stands in for LiteLLM's ``completion``: which thread ran it."""
    return threading.get_ident()


completion.__module__ = litellm_preparation.COMPLETION_MODULE


def litellm_shaped(fn: Any = completion) -> functools.partial[Any]:
    """What ``litellm.acompletion`` submits: its completion, with kwargs, in a copied context."""
    return functools.partial(contextvars.copy_context().run, functools.partial(fn, model="m"))


def route(llm: StandinLLM, litellm_model: str = "openai/standin-model") -> ModelRoute:
    return ModelRoute(
        name="standin",
        entry="standin",
        litellm_model=litellm_model,
        api_key=PROVIDER_KEY,
        api_base=llm.base_url,
        timeout=20.0,
        defaults={},
    )


def request(content: str = "Hi") -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "standin", "messages": [{"role": "user", "content": content}]}
    )


async def test_litellm_builds_an_openai_request_on_the_loop(llm: StandinLLM) -> None:
    before = PreparationExecutor.inline_runs
    result = await Inference().complete(route(llm), request("inline"))
    assert result.choices[0].message.content == "Echo: inline"
    # Fails when LiteLLM no longer submits its completion the way this module expects.
    assert PreparationExecutor.inline_runs == before + 1


async def test_a_request_made_while_another_call_runs_is_built_on_a_thread(
    llm: StandinLLM,
) -> None:
    llm.configure(delay=0.5)
    inference = Inference()
    before = PreparationExecutor.inline_runs
    first = asyncio.create_task(inference.complete(route(llm), request("first")))
    while not llm.prompt_counts().get("first"):
        await asyncio.sleep(0.01)
    second = await inference.complete(route(llm), request("second"))
    assert second.choices[0].message.content == "Echo: second"
    assert (await first).choices[0].message.content == "Echo: first"
    assert PreparationExecutor.inline_runs == before + 1  # the first only
    # Alone again: built on the loop.
    await inference.complete(route(llm), request("third"))
    assert PreparationExecutor.inline_runs == before + 2


async def test_another_providers_request_is_built_on_a_thread(llm: StandinLLM) -> None:
    before = PreparationExecutor.inline_runs
    result = await Inference().complete(route(llm, "hosted_vllm/standin-model"), request("vllm"))
    assert result.choices[0].message.content == "Echo: vllm"
    assert PreparationExecutor.inline_runs == before


async def test_a_large_request_is_built_on_a_thread(llm: StandinLLM) -> None:
    before = PreparationExecutor.inline_runs
    content = "x" * (MAX_INLINE_PREPARATION_CHARS + 1)
    result = await Inference().complete(route(llm), request(content))
    assert result.choices[0].message.content == f"Echo: {content}"
    assert PreparationExecutor.inline_runs == before


async def test_a_marked_preparation_runs_on_the_loops_thread_once() -> None:
    loop = asyncio.get_running_loop()
    install(loop)
    with inline_preparation():
        first = await loop.run_in_executor(None, litellm_shaped())
        second = await loop.run_in_executor(None, litellm_shaped())
    assert first == threading.get_ident()
    assert second != threading.get_ident()  # one call, one preparation


async def test_unmarked_or_other_work_goes_to_a_thread() -> None:
    loop = asyncio.get_running_loop()
    install(loop)
    here = threading.get_ident()
    assert await loop.run_in_executor(None, litellm_shaped()) != here  # not marked
    with inline_preparation(False):
        assert await loop.run_in_executor(None, litellm_shaped()) != here
    with inline_preparation():
        # asyncio.to_thread, aiohttp's DNS look-ups: never on the loop.
        assert await asyncio.to_thread(completion) != here
        assert await loop.run_in_executor(None, completion) != here

        def other(**_kwargs: Any) -> int:
            return threading.get_ident()

        assert await loop.run_in_executor(None, litellm_shaped(other)) != here


async def test_a_failed_preparation_raises_where_it_is_awaited() -> None:
    def completion(**_kwargs: Any) -> None:
        raise ValueError("bad request")

    completion.__module__ = litellm_preparation.COMPLETION_MODULE
    loop = asyncio.get_running_loop()
    install(loop)
    with inline_preparation(), pytest.raises(ValueError, match="bad request"):
        await loop.run_in_executor(None, litellm_shaped(completion))
    assert await asyncio.to_thread(threading.get_ident) != threading.get_ident()
