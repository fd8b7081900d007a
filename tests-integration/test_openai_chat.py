"""The synchronous chat surface under /openai/v1, driven by the official ``openai`` SDK.

A real server, node and stand-in LLM; the SDK is used exactly as scripts
written for OpenAI use it, only ``base_url`` and ``api_key`` differ.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
import openai
import pytest
from openai_world import MODEL, OpenAIWorld, native_jobs, start_world
from openbeepboop_testkit.processes import wait_until
from openbeepboop_testkit.standin import PERMANENT_ERROR_MESSAGE, REFUSAL_MARKER, REFUSAL_TEXT


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


@pytest.mark.parametrize(
    ("prompt", "params"),
    [
        ("stream a legacy function call", {"functions": [{"name": "lookup", "parameters": {}}]}),
        (f"stream a refusal {REFUSAL_MARKER}", {}),
        ("stream logprobs", {"logprobs": True}),
    ],
    ids=["function_call", "refusal", "logprobs"],
)
def test_a_stream_joins_to_the_same_message(
    oa: OpenAIWorld, prompt: str, params: dict[str, object]
) -> None:
    """The SDK's stream accumulator ends with what the plain call returns, every field of it."""
    client = _client(oa)
    messages = [{"role": "user", "content": prompt}]
    plain = client.chat.completions.create(model=MODEL, messages=messages, **params)  # type: ignore[arg-type, call-overload]
    with client.chat.completions.stream(model=MODEL, messages=messages, **params) as stream:  # type: ignore[arg-type]
        streamed = stream.get_final_completion()
    [plain_choice], [streamed_choice] = plain.choices, streamed.choices
    assert streamed_choice.finish_reason == plain_choice.finish_reason
    for field in ("content", "refusal", "function_call"):
        assert getattr(streamed_choice.message, field) == getattr(plain_choice.message, field)
    assert streamed_choice.logprobs == plain_choice.logprobs
    # What the stand-in answered really carried the field under test.
    answered = plain_choice.message
    assert answered.function_call or answered.refusal == REFUSAL_TEXT or plain_choice.logprobs


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
    oa.seen_serving("oa-nobody-takes")
    body = {"model": "oa-nobody-takes", "messages": [{"role": "user", "content": "gone"}]}
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
    world = start_world(tmp_path_factory.mktemp("oa-timeout"), node=False, sync_timeout_seconds=5)
    short = next(world)
    try:
        short.seen_serving("oa-nobody-takes")
        client = openai.OpenAI(base_url=short.base_url, api_key=short.user_key, max_retries=0)
        key = {"Idempotency-Key": "waited-on-twice"}
        messages = [{"role": "user", "content": "late"}]
        answers: list[BaseException] = []

        def first_caller() -> None:
            try:
                client.chat.completions.create(
                    model="oa-nobody-takes",
                    messages=messages,  # type: ignore[arg-type]
                    extra_headers=key,
                )
            except BaseException as exc:  # handed to the test's thread
                answers.append(exc)

        waiting = threading.Thread(target=first_caller)
        waiting.start()
        wait_until(lambda: native_jobs(short, short.user_key), 30, "the first caller's job")
        # A retry with the same key hangs up: the job stays, the first caller still waits.
        with pytest.raises(openai.APITimeoutError):
            client.with_options(timeout=1.0).chat.completions.create(
                model="oa-nobody-takes",
                messages=messages,  # type: ignore[arg-type]
                extra_headers=key,
            )
        waiting.join(60)
        [timed_out] = answers
        assert isinstance(timed_out, openai.APIStatusError) and timed_out.status_code == 504
        [job] = native_jobs(short, short.user_key)
        assert job["id"] in str(timed_out) and job["status"] == "QUEUED"
        assert "stays queued" in str(timed_out)
    finally:
        world.close()


def test_a_model_no_node_serves_raises_not_found_at_once(oa: OpenAIWorld) -> None:
    """As OpenAI answers an unknown model: nothing queued, no wait for a node that is not there."""
    key = oa.server.create_key("USER", "oa-unserved")
    client = openai.OpenAI(base_url=oa.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "anyone?"}]
        )
    assert refused.value.code == "model_not_found" and '"gpt-4o-mini"' in refused.value.message
    assert native_jobs(oa, key) == []


def test_the_sdk_pointed_at_the_native_api_is_told_where_to_point(oa: OpenAIWorld) -> None:
    """``base_url=HOST/v1``, as for vLLM or Ollama: a clear error, not a job nobody reads."""
    key = oa.server.create_key("USER", "oa-wrong-base")
    client = openai.OpenAI(base_url=oa.server.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "wrong"}])
    assert "/openai/v1" in refused.value.message
    assert native_jobs(oa, key) == [] and not oa.llm.calls_for("wrong")
    with pytest.raises(openai.NotFoundError, match="under /openai/v1"):
        client.batches.list()


def test_sdk_retries_with_an_idempotency_key_share_one_job(oa: OpenAIWorld) -> None:
    """The SDK retries a call it timed out on; with the same key the retries wait for
    the first attempt's job instead of queuing the work again (docs/openai.md, "Retries")."""
    prompt, key = "sync retried thrice", {"Idempotency-Key": "sdk-retry-1"}
    messages = [{"role": "user", "content": prompt}]
    impatient = openai.OpenAI(base_url=oa.base_url, api_key=oa.user_key, timeout=1.0, max_retries=2)
    # Longer than the three attempts and the SDK's backoff between them (~5 s).
    oa.llm.configure(delay=10.0)
    try:
        with pytest.raises(openai.APITimeoutError):
            impatient.chat.completions.create(model=MODEL, messages=messages, extra_headers=key)  # type: ignore[arg-type]
        completion = _client(oa).chat.completions.create(
            model=MODEL,
            messages=messages,  # type: ignore[arg-type]
            extra_headers=key,
        )
    finally:
        oa.llm.configure(delay=0.0)
    assert completion.choices[0].message.content == f"Echo: {prompt}"
    assert len(oa.llm.calls_for(prompt)) == 1
    # The same key with another request is refused, not answered with this one.
    with pytest.raises(openai.UnprocessableEntityError):
        _client(oa).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "another question"}],
            extra_headers=key,
        )


def test_a_retry_after_a_hang_up_queues_the_request_again(oa: OpenAIWorld) -> None:
    """A caller that hung up before a node took its job had the job cancelled; its
    retry with the same key is queued anew, not answered "cancelled"."""
    key = oa.server.create_key("USER", "oa-retry-gone")
    oa.seen_serving("oa-retry-nobody-takes")
    body = {"model": "oa-retry-nobody-takes", "messages": [{"role": "user", "content": "again"}]}
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "gone-then-back"}

    def hang_up() -> None:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(oa.base_url + "/chat/completions", json=body, headers=headers, timeout=1.0)

    def statuses() -> list[str]:
        return sorted(job["status"] for job in native_jobs(oa, key))

    hang_up()
    wait_until(lambda: statuses() == ["CANCELLED"], 30, "the first job to be cancelled")
    hang_up()  # a 409 "cancelled" would come back at once instead of timing out
    wait_until(lambda: statuses() == ["CANCELLED", "CANCELLED"], 30, "a second job, cancelled")


def test_a_gather_of_more_calls_than_the_poll_limit_is_answered_in_full(oa: OpenAIWorld) -> None:
    """150 calls at once from one key: more than its 100 waiting polls, well within
    the synchronous chats' own limit (docs/openai.md, "Synchronous chat")."""
    prompts = [f"gathered {index}" for index in range(150)]

    async def main() -> list[str | None]:
        async with openai.AsyncOpenAI(
            base_url=oa.base_url, api_key=oa.user_key, max_retries=0, timeout=300
        ) as client:
            completions = await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": prompt}]
                    )
                    for prompt in prompts
                )
            )
        return [completion.choices[0].message.content for completion in completions]

    assert asyncio.run(main()) == [f"Echo: {prompt}" for prompt in prompts]
