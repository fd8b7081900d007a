"""A job's request before LiteLLM: size ceilings, media URLs, public addresses only."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from openbeepboop_node.exceptions import InferenceError
from openbeepboop_node.request_guard import (
    MAX_REQUEST_DEPTH,
    RequestLimits,
    check_media_urls,
    scan_request,
)
from openbeepboop_schemas import ChatCompletionRequest
from openbeepboop_schemas.chat import ChatMessage


def request(messages: list[dict[str, Any]], **extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": messages, **extra})


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def refused(call: Any) -> InferenceError:
    with pytest.raises(InferenceError) as caught:
        call()
    assert caught.value.error.retryable is False
    return caught.value


def test_a_plain_request_passes_with_no_urls() -> None:
    req = request([user("hi"), {"role": "assistant", "content": "see https://example.com"}])
    assert scan_request(req, RequestLimits()) == []


@pytest.mark.parametrize(
    ("limits", "messages", "named"),
    [
        (RequestLimits(max_messages=2), [user("a")] * 3, "max_messages"),
        (
            RequestLimits(max_content_parts=3),
            [user([{"type": "text", "text": "x"}] * 4)],
            "max_content_parts",
        ),
        (RequestLimits(max_request_chars=10), [user("x" * 11)], "max_request_chars"),
        (
            RequestLimits(max_request_chars=10),
            [user([{"type": "text", "text": "x" * 11}])],
            "max_request_chars",
        ),
    ],
)
def test_past_a_ceiling_the_job_fails_permanently_naming_it(
    limits: RequestLimits, messages: list[dict[str, Any]], named: str
) -> None:
    error = refused(lambda: scan_request(request(messages), limits)).error
    assert error.type == "request_too_large"
    assert named in error.message


def test_tools_and_extra_fields_count_towards_the_characters() -> None:
    tools = [{"type": "function", "function": {"name": "f", "description": "d" * 100}}]
    error = refused(
        lambda: scan_request(
            request([user("hi")], tools=tools), RequestLimits(max_request_chars=50)
        )
    ).error
    assert "max_request_chars" in error.message


def test_deep_nesting_is_refused() -> None:
    nested: Any = "x"
    for _ in range(MAX_REQUEST_DEPTH + 5):
        nested = {"a": nested}
    error = refused(lambda: scan_request(request([user([nested])]), RequestLimits())).error
    assert "nesting" in error.message


def test_an_absurd_request_is_refused_in_less_time_than_it_took_to_build() -> None:
    # The poison job of issue 18 (3.5 M empty parts), built without validation.
    # Timed against its own building, not a fixed figure, so a slow host is no
    # excuse: a scan that walked every part would take longer than building them.
    started = time.perf_counter()
    parts: list[dict[str, Any]] = [{} for _ in range(3_500_000)]
    message = ChatMessage.model_construct(role="user", content=parts)
    req = ChatCompletionRequest.model_construct(model="m", messages=[message])
    built = time.perf_counter() - started
    started = time.perf_counter()
    error = refused(lambda: scan_request(req, RequestLimits())).error
    assert time.perf_counter() - started < built / 10
    assert "max_content_parts" in error.message


def test_media_urls_are_found_outside_text_and_data_urls_are_not() -> None:
    req = request(
        [
            user(
                [
                    {"type": "text", "text": "http://in-the-text.example"},
                    image("http://127.0.0.1:9/cat.png"),
                    image("data:image/png;base64,AAAA"),
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                    {"type": "file", "file": {"file_id": "https://files.example/x.pdf"}},
                    {"type": "image_url", "image_url": "ftp://old.example/x.png"},
                ]
            )
        ]
    )
    assert sorted(scan_request(req, RequestLimits())) == [
        "ftp://old.example/x.png",
        "http://127.0.0.1:9/cat.png",
        "https://files.example/x.pdf",
    ]


async def test_media_urls_are_refused_unless_the_operator_allows_them() -> None:
    with pytest.raises(InferenceError) as caught:
        await check_media_urls(["https://example.com/x.png"], allowed=False)
    assert caught.value.error.type == "media_url_refused"
    assert "not allowed for this model" in caught.value.error.message
    assert caught.value.error.retryable is False


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/x.png",
        "http://localhost/x.png",
        "http://10.1.2.3/x.png",
        "http://192.168.0.1/x.png",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x.png",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://224.0.0.1/x.png",
        "http://0.0.0.0/x.png",
        "http://240.0.0.1/x.png",
    ],
)
async def test_allowed_media_urls_must_resolve_to_public_addresses(url: str) -> None:
    with pytest.raises(InferenceError) as caught:
        await check_media_urls([url], allowed=True)
    assert caught.value.error.type == "media_url_refused"
    assert "non-public address" in caught.value.error.message


@pytest.mark.parametrize("url", ["ftp://8.8.8.8/x.png", "file:///etc/passwd", "gs://b/x.png"])
async def test_only_http_media_urls_may_be_allowed(url: str) -> None:
    with pytest.raises(InferenceError) as caught:
        await check_media_urls([url], allowed=True)
    assert "only http(s)" in caught.value.error.message


async def test_a_host_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(InferenceError) as caught:
        await check_media_urls(["http://no-such-host.invalid/x.png"], allowed=True)
    assert "cannot be resolved" in caught.value.error.message


async def test_a_public_address_passes_when_allowed() -> None:
    await asyncio.wait_for(check_media_urls(["https://8.8.8.8/x.png"], allowed=True), 10)
