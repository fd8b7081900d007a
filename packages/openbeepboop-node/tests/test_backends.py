"""Where a backend is probed and listed, and how a pause ends (without LiteLLM)."""

from __future__ import annotations

import pytest
from conditions import wait_for
from openbeepboop_node.backend_health import BackendHealth
from openbeepboop_node.backends import (
    Backend,
    backend_for,
    list_models,
    open_session,
    parse_model_list,
)
from openbeepboop_node.config import ModelConfig
from openbeepboop_node.exceptions import BackendUnreachableError
from openbeepboop_testkit.standin import StandinLLM


def entry(litellm_model: str, api_base: str | None = None, name: str = "m") -> ModelConfig:
    return ModelConfig(name=name, litellm_model=litellm_model, api_base=api_base)


@pytest.mark.parametrize(
    ("litellm_model", "api_base", "urls"),
    [
        ("ollama_chat/llama3", "http://gpu:11434", ["http://gpu:11434/api/tags"]),
        ("ollama/llama3", None, ["http://localhost:11434/api/tags"]),
        ("openai/m", "http://box:8080/v1/", ["http://box:8080/v1/models"]),
        (
            "hosted_vllm/m",
            "http://box:8000",
            ["http://box:8000/models", "http://box:8000/v1/models"],
        ),
        # Only the path counts: a host named v1 is no /v1 path, and a query
        # stays after the path.
        ("openai/m", "http://v1", ["http://v1/models", "http://v1/v1/models"]),
        ("openai/m", "http://v1:8080/", ["http://v1:8080/models", "http://v1:8080/v1/models"]),
        (
            "openai/m",
            "https://box/v1?api-version=2",
            ["https://box/v1/models?api-version=2"],
        ),
        (
            "openai/m",
            "http://box/llm?route=/v1",
            ["http://box/llm/models?route=/v1", "http://box/llm/v1/models?route=/v1"],
        ),
        ("ollama_chat/llama3", "http://gpu:11434/?k=v", ["http://gpu:11434/api/tags?k=v"]),
        ("openai/gpt-4o-mini", None, ["https://api.openai.com/v1/models"]),
        ("gpt-4o-mini", None, ["https://api.openai.com/v1/models"]),
        ("someprovider/x", None, []),
    ],
)
def test_where_a_backend_is_asked(
    litellm_model: str, api_base: str | None, urls: list[str]
) -> None:
    backend = backend_for(entry(litellm_model, api_base))
    assert backend.list_urls() == urls
    assert backend.probe_url == (urls[0] if urls else None)


def test_keys_go_the_way_each_provider_wants_them() -> None:
    assert backend_for(entry("ollama_chat/x"), "k").headers() == {}
    assert backend_for(entry("openai/x"), "k").headers() == {"Authorization": "Bearer k"}
    assert backend_for(entry("anthropic/claude"), "k").headers()["x-api-key"] == "k"
    assert "sk-secret" not in repr(backend_for(entry("openai/x"), "sk-secret"))


def test_model_lists_of_ollama_and_openai_are_read() -> None:
    assert parse_model_list(b'{"models": [{"name": "llama3:latest"}]}') == ["llama3:latest"]
    assert parse_model_list(b'{"object": "list", "data": [{"id": "m1"}, {"id": "m2"}]}') == [
        "m1",
        "m2",
    ]
    assert parse_model_list(b"<html>") is None
    assert parse_model_list(b'{"data": "nope"}') is None


async def test_a_model_list_is_read_from_the_stand_in(llm: StandinLLM) -> None:
    session = open_session()
    try:
        answer = await list_models(session, backend_for(entry("openai/x", llm.base_url)))
        assert (answer.status, answer.models) == (200, ["standin-model"])
        # Without /v1 in the base: /models is a 404 there, /v1/models lists them.
        answer = await list_models(session, backend_for(entry("openai/x", llm.url)))
        assert answer.models == ["standin-model"]
        with pytest.raises(BackendUnreachableError):
            await list_models(session, backend_for(entry("ollama_chat/x", "http://127.0.0.1:1")))
    finally:
        await session.close()


async def test_a_backend_with_nothing_to_probe_is_retried_blind_after_the_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    changes: list[tuple[str, bool]] = []
    health = BackendHealth(
        [Backend("x", "someprovider/x", None)],
        initial=0.05,
        maximum=0.1,
        on_change=lambda name, paused: changes.append((name, paused)),
    )
    health.pause("x", "no route to host")
    health.pause("x", "again")  # already paused: no second log, no second probe
    assert (health.live, health.paused) == ([], ["x"])
    await wait_for(lambda: health.live == ["x"], what="the blind resume")
    assert changes == [("x", True), ("x", False)]
    assert sum("cannot be reached" in r.getMessage() for r in caplog.records) == 1
    assert any("trying its backend again" in r.getMessage() for r in caplog.records)
    await health.aclose()


async def test_a_probe_resumes_the_model_once_the_backend_answers() -> None:
    with StandinLLM() as standin:
        port = standin.port
    backend = backend_for(entry("openai/x", f"http://127.0.0.1:{port}/v1"))
    health = BackendHealth([backend], initial=0.05, maximum=0.1)
    health.pause("m", "refused")
    assert health.paused == ["m"]
    with StandinLLM(port=port):
        await wait_for(lambda: health.paused == [], what="the probe to find the backend")
    await health.aclose()
