"""The provider told to LiteLLM: given only where LiteLLM reads the call the same without it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import PROVIDER_KEY
from openbeepboop_node import provider_hints
from openbeepboop_node.config import NodeConfig
from openbeepboop_node.exceptions import InferenceError
from openbeepboop_node.inference import Inference, load_litellm
from openbeepboop_node.model_routes import ModelRoutes
from openbeepboop_node.provider_hints import provider_hint
from openbeepboop_schemas import ChatCompletionRequest, NodeError
from openbeepboop_testkit.standin import StandinLLM

BASE = "http://127.0.0.1:9/v1"


@pytest.fixture(autouse=True)
def fresh_hints() -> Iterator[None]:
    saved = dict(provider_hints._hints)
    provider_hints._hints.clear()
    yield
    provider_hints._hints.clear()
    provider_hints._hints.update(saved)


@pytest.mark.parametrize(
    ("model", "api_base", "hint"),
    [
        ("openai/standin-model", BASE, "openai"),
        ("ollama_chat/llama3", "http://127.0.0.1:11434", "ollama_chat"),
        ("hosted_vllm/meta-llama/Llama-3.1-8B", BASE, "hosted_vllm"),
        ("lm_studio/qwen", BASE, "lm_studio"),
        # No provider in the model string: LiteLLM may infer one from the endpoint.
        ("gpt-4o", None, None),
        # A model string LiteLLM cannot route: its own error must reach the job.
        ("meta-llama/Llama-3", BASE, None),
        # LiteLLM reads these differently when told the provider.
        ("openrouter/anthropic/claude-3.5-sonnet", None, None),
        ("anthropic/claude-2", None, None),
    ],
)
def test_a_hint_only_where_litellm_reads_the_model_the_same(
    model: str, api_base: str | None, hint: str | None
) -> None:
    litellm = load_litellm()
    assert provider_hint(litellm, model, api_base, "sk-x") == hint
    if hint is not None:
        found = litellm.get_llm_provider(model, api_base=api_base, api_key="sk-x")
        told = litellm.get_llm_provider(
            model, custom_llm_provider=hint, api_base=api_base, api_key="sk-x"
        )
        assert tuple(told) == tuple(found)


def test_a_hint_is_worked_out_once_per_model_endpoint_and_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    litellm = load_litellm()
    calls: list[str] = []
    real = litellm.get_llm_provider

    def counting(model: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(litellm, "get_llm_provider", counting)
    for _ in range(3):
        assert provider_hint(litellm, "openai/m", BASE, "sk-x") == "openai"
    checked = len(calls)
    assert checked > 0
    assert provider_hint(litellm, "openai/m", BASE, "sk-other") == "openai"
    assert len(calls) == 2 * checked


def test_past_the_table_s_size_calls_go_without_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    litellm = load_litellm()
    monkeypatch.setattr(provider_hints, "MAX_PROVIDER_HINTS", 2)
    assert provider_hint(litellm, "openai/a", BASE, None) == "openai"
    assert provider_hint(litellm, "openai/b", BASE, None) == "openai"
    assert provider_hint(litellm, "openai/c", BASE, None) is None
    assert len(provider_hints._hints) == 2
    assert provider_hint(litellm, "openai/a", BASE, None) == "openai"  # still kept


def _request(content: str) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "standin", "messages": [{"role": "user", "content": content}]}
    )


async def test_the_node_tells_litellm_the_route_s_provider(
    llm: StandinLLM, make_config: Callable[..., NodeConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    litellm = load_litellm()
    seen: list[dict[str, Any]] = []
    real = litellm.acompletion

    async def spy(**kwargs: Any) -> Any:
        seen.append(kwargs)
        return await real(**kwargs)

    monkeypatch.setattr(litellm, "acompletion", spy)
    route = ModelRoutes(make_config()).route_for("standin")
    assert route is not None
    result = await Inference().complete(route, _request("Hi"))
    assert result.choices[0].message.content == "Echo: Hi"
    assert seen[0]["custom_llm_provider"] == "openai"
    assert seen[0]["model"] == "openai/standin-model"
    (call,) = llm.calls()
    assert (call.model, call.api_key) == ("standin-model", PROVIDER_KEY)


async def _outcome(config: NodeConfig, content: str) -> NodeError | str:
    route = ModelRoutes(config).route_for("standin")
    assert route is not None
    try:
        result = await Inference().complete(route, _request(content))
    except InferenceError as exc:
        return exc.error
    return str(result.choices[0].message.content)


@pytest.mark.parametrize("fail_status", [None, 400, 401, 404, 429, 500, 503])
async def test_calls_end_the_same_with_the_hint_as_without(
    llm: StandinLLM,
    make_config: Callable[..., NodeConfig],
    monkeypatch: pytest.MonkeyPatch,
    fail_status: int | None,
) -> None:
    llm.configure(fail_status=fail_status)
    config = make_config()
    hinted = await _outcome(config, "same")
    monkeypatch.setattr("openbeepboop_node.inference.provider_hint", lambda *args: None)
    unhinted = await _outcome(config, "same")
    assert hinted == unhinted
    first, second = llm.calls()
    assert (first.model, first.body, first.api_key) == (second.model, second.body, second.api_key)


async def test_a_timeout_ends_the_same_with_the_hint_as_without(
    llm: StandinLLM, make_config: Callable[..., NodeConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    llm.configure(delay=3.0)
    config = make_config()
    model = config.models[0].model_copy(update={"timeout": 0.3})
    config = config.model_copy(update={"models": [model]})
    hinted = await _outcome(config, "slow")
    monkeypatch.setattr("openbeepboop_node.inference.provider_hint", lambda *args: None)
    unhinted = await _outcome(config, "slow")
    assert isinstance(hinted, NodeError) and isinstance(unhinted, NodeError)
    assert hinted.type == "timeout"
    # LiteLLM's message gives the time the call took: the rest is the same.
    taken = re.compile(r"time taken=[0-9.]+")
    assert taken.sub("", hinted.message) == taken.sub("", unhinted.message)
    assert hinted.model_copy(update={"message": ""}) == unhinted.model_copy(update={"message": ""})
