"""The synchronous chat surface under /openai/v1, driven by the official ``openai`` SDK.

A real server, node and stand-in LLM; the SDK is used exactly as scripts
written for OpenAI use it, only ``base_url`` and ``api_key`` differ.
"""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from openai_world import MODEL, OpenAIWorld, native_jobs, start_world
from openbeepboop_testkit.processes import wait_until
from openbeepboop_testkit.standin import PERMANENT_ERROR_MESSAGE


def _client(oa: OpenAIWorld, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=oa.base_url, api_key=key or oa.user_key, timeout=60)


def test_create_and_stream_return_the_node_content(oa: OpenAIWorld) -> None:
    client = _client(oa)
    messages = [{"role": "user", "content": "sync hello"}]
    completion = client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Echo: sync hello"
    assert completion.usage is not None and completion.usage.total_tokens > 0

    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "sync stream"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: sync stream"
    assert chunks[-1].usage is not None
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)

    # Ordinary jobs of the key, visible natively; stream fields never reach the node.
    jobs = native_jobs(oa, oa.user_key)
    assert sum(1 for job in jobs if job["status"] == "COMPLETED") >= 2
    [call] = oa.llm.calls_for("sync stream")
    assert "stream" not in call.body and "stream_options" not in call.body

    models = [model.id for model in client.models.list()]
    assert MODEL in models


def test_errors_map_to_the_sdk_exception_classes(oa: OpenAIWorld) -> None:
    with pytest.raises(openai.AuthenticationError):
        _client(oa, "sk-not-a-real-key-000000000000000000000").models.list()
    client = _client(oa)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])
    oa.llm.configure(fail_prompts=["POISON"])
    with pytest.raises(openai.BadRequestError) as failed:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "sync POISON"}]
        )
    assert PERMANENT_ERROR_MESSAGE in str(failed.value)
    # Not retried by the SDK (x-should-retry: false) nor by the queue (permanent).
    assert len(oa.llm.calls_for("sync POISON")) == 1


def test_async_client_creates_and_streams(oa: OpenAIWorld) -> None:
    async def main() -> tuple[str | None, str]:
        async with openai.AsyncOpenAI(base_url=oa.base_url, api_key=oa.user_key) as client:
            completion, stream = await asyncio.gather(
                client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "async one"}]
                ),
                client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "async two"}], stream=True
                ),
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return completion.choices[0].message.content, text

    assert asyncio.run(main()) == ("Echo: async one", "Echo: async two")


def test_a_caller_gone_before_the_lease_leaves_no_work(oa: OpenAIWorld) -> None:
    key = oa.server.create_key("USER", "oa-gone")
    body = {"model": "oa-nobody-serves", "messages": [{"role": "user", "content": "gone"}]}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(
            oa.base_url + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=1.0,
        )

    def cancelled() -> bool:
        jobs = native_jobs(oa, key)
        return len(jobs) == 1 and jobs[0]["status"] == "CANCELLED"

    wait_until(cancelled, 30, "the abandoned synchronous job to be cancelled")


def test_sync_timeout_names_the_job(tmp_path_factory: pytest.TempPathFactory) -> None:
    world = start_world(tmp_path_factory.mktemp("oa-timeout"), node=False, sync_timeout_seconds=1)
    short = next(world)
    try:
        client = openai.OpenAI(base_url=short.base_url, api_key=short.user_key)
        with pytest.raises(openai.APIStatusError) as timed_out:
            client.chat.completions.create(
                model="oa-nobody-serves", messages=[{"role": "user", "content": "late"}]
            )
        assert timed_out.value.status_code == 504
        [job] = native_jobs(short, short.user_key)
        assert job["id"] in str(timed_out.value) and job["status"] == "QUEUED"
    finally:
        world.close()
