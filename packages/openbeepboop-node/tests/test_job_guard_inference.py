"""The node's own guards around one LLM call: caps, ceilings, media URLs, local failures.

LiteLLM for real against the stand-in on loopback; a refused job never reaches it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from openbeepboop_node import inference
from openbeepboop_node.config import NodeConfig
from openbeepboop_node.exceptions import InferenceError
from openbeepboop_node.inference import Inference, load_litellm
from openbeepboop_node.model_routes import ModelRoutes
from openbeepboop_node.request_guard import RequestLimits
from openbeepboop_schemas import ChatCompletion, ChatCompletionRequest
from openbeepboop_testkit.standin import StandinLLM


def job(content: Any = "Hi", **params: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "standin", "messages": [{"role": "user", "content": content}], **params}
    )


def with_model(config: NodeConfig, **changes: Any) -> NodeConfig:
    model = config.models[0].model_copy(update=changes)
    return config.model_copy(update={"models": [model]})


async def run(
    config: NodeConfig, req: ChatCompletionRequest, limits: RequestLimits | None = None
) -> ChatCompletion:
    route = ModelRoutes(config).route_for(req.model)
    assert route is not None
    return await Inference(limits).complete(route, req)


async def failure(
    config: NodeConfig, req: ChatCompletionRequest, limits: RequestLimits | None = None
) -> InferenceError:
    with pytest.raises(InferenceError) as caught:
        await run(config, req, limits)
    return caught.value


async def test_the_operators_caps_and_fixed_values_win(
    llm: StandinLLM, make_config: Callable[..., NodeConfig]
) -> None:
    config = with_model(make_config(), max_tokens=20, max_n=2, fixed={"temperature": 0})
    await run(config, job("a", max_tokens=100_000, n=128, temperature=1.9))
    await run(config, job("b", max_completion_tokens=100_000))
    await run(config, job("c"))
    first, second, third = llm.calls()
    assert (first.body["max_tokens"], first.body["n"], first.body["temperature"]) == (20, 2, 0)
    assert second.body["max_completion_tokens"] == 20
    assert third.body["max_tokens"] == 20


async def test_a_request_past_a_ceiling_never_reaches_the_llm(
    llm: StandinLLM, make_config: Callable[..., NodeConfig]
) -> None:
    parts = [{"type": "text", "text": "x"}] * 50
    error = await failure(make_config(), job(parts), RequestLimits(max_content_parts=10))
    assert (error.error.type, error.error.retryable) == ("request_too_large", False)
    assert "more than 10 content parts" in error.error.message
    assert llm.calls() == []


@pytest.mark.parametrize("litellm_model", ["openai/standin-model", "anthropic/claude-3-5-haiku"])
async def test_a_media_url_is_refused_and_never_fetched(
    llm: StandinLLM, make_config: Callable[..., NodeConfig], litellm_model: str
) -> None:
    # tests-integration/test_hostile_jobs.py shows with a capture server that nothing
    # is fetched; here: refused before LiteLLM is called, whatever the provider.
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}},
    ]
    for allowed in (False, True):
        config = with_model(make_config(), litellm_model=litellm_model, allow_media_urls=allowed)
        error = await failure(config, job(content))
        assert (error.error.type, error.error.retryable) == ("media_url_refused", False)
    assert llm.calls() == []


async def test_a_data_url_passes(llm: StandinLLM, make_config: Callable[..., NodeConfig]) -> None:
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    await run(make_config(), job(content))
    assert len(llm.calls()) == 1


async def test_a_request_litellm_refuses_to_build_is_permanent_and_clean(
    llm: StandinLLM, make_config: Callable[..., NodeConfig]
) -> None:
    # LiteLLM raises APIConnectionError, traceback in its message, before any network.
    config = with_model(make_config(), litellm_model="anthropic/claude-3-5-haiku")
    error = (await failure(config, job([{"type": "bogus"}]))).error
    assert (error.type, error.retryable) == ("invalid_request_error", False)
    assert "Traceback" not in error.message and "site-packages" not in error.message
    assert "Invalid user message" in error.message
    assert llm.calls() == []


async def test_a_call_that_never_returns_is_cut_at_the_models_timeout(
    make_config: Callable[..., NodeConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hangs(**kwargs: Any) -> Any:  # LiteLLM stuck where its own timeout is not
        await asyncio.Event().wait()

    monkeypatch.setattr(load_litellm(), "acompletion", hangs)
    monkeypatch.setattr(inference, "CALL_CEILING_MARGIN_SECONDS", 0.0)
    config = with_model(make_config(), timeout=0.2)
    error = (await asyncio.wait_for(failure(config, job()), 5)).error
    assert (error.type, error.retryable) == ("timeout", True)
    assert "timeout of 0.2 s" in error.message


async def test_an_unexpected_failure_message_loses_its_traceback_and_paths(
    make_config: Callable[..., NodeConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(**kwargs: Any) -> Any:
        raise RuntimeError(
            "boom in /srv/node/venv/lib/python3.11/site-packages/x.py\n"
            'Traceback (most recent call last):\n  File "/srv/x.py", line 1\n'
        )

    monkeypatch.setattr(load_litellm(), "acompletion", broken)
    error = (await failure(make_config(), job())).error
    assert error.type == "node_error"
    assert error.message == "RuntimeError: boom in <path>"


def test_a_connection_error_with_the_network_behind_it_stays_retryable() -> None:
    litellm = load_litellm()

    def raised(cause: BaseException) -> BaseException:
        try:
            try:
                raise cause
            except Exception:
                raise litellm.APIConnectionError(
                    message="failed", llm_provider="openai", model="m"
                ) from None
        except Exception as exc:
            return exc

    broken = inference.to_node_error(raised(httpx.RemoteProtocolError("disconnected")))
    assert (broken.type, broken.retryable) == ("api_connection_error", True)
    local = inference.to_node_error(raised(KeyError("content")))
    assert (local.type, local.retryable) == ("invalid_request_error", False)
