"""The chat completion request keeps what it must and refuses what it cannot run."""

from __future__ import annotations

import json

import pytest
from openbeepboop_schemas import ChatCompletion, ChatCompletionRequest
from pydantic import ValidationError

MINIMAL = {"model": "llama3", "messages": [{"role": "user", "content": "Hi"}]}


def test_minimal_request_is_valid() -> None:
    request = ChatCompletionRequest.model_validate(MINIMAL)
    assert request.model == "llama3"
    assert request.to_payload() == MINIMAL


def test_pass_through_fields_round_trip_exactly() -> None:
    sent = {
        **MINIMAL,
        "temperature": 1,
        "top_p": 0.5,
        "seed": 7,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "logit_bias": {"50256": -100},
        "some_future_field": [1, {"a": None}],
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}], "name": "bob"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
            {"role": "tool", "content": "42", "tool_call_id": "c1"},
        ],
    }
    payload = ChatCompletionRequest.model_validate(sent).to_payload()
    assert payload == sent
    assert json.dumps(payload, sort_keys=True) == json.dumps(sent, sort_keys=True)
    assert isinstance(payload["temperature"], int)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": MINIMAL["messages"]}, "model"),
        ({"model": "", "messages": MINIMAL["messages"]}, "model"),
        ({"model": 3, "messages": MINIMAL["messages"]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": "hello"}, "messages"),
        ({"model": "m", "messages": [{"content": "x"}]}, "messages.0.role"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({**MINIMAL, "temperature": 3}, "temperature"),
        ({**MINIMAL, "temperature": "hot"}, "temperature"),
        ({**MINIMAL, "top_p": -0.1}, "top_p"),
        ({**MINIMAL, "n": 0}, "n"),
        ({**MINIMAL, "max_tokens": 0}, "max_tokens"),
        ({**MINIMAL, "stream": True}, "stream"),
    ],
)
def test_invalid_requests_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate(body)
    locs = {".".join(str(p) for p in err["loc"]) for err in caught.value.errors()}
    assert any(loc.startswith(field) for loc in locs), locs


def test_stream_error_says_why() -> None:
    with pytest.raises(ValidationError, match="stream=true is not supported"):
        ChatCompletionRequest.model_validate({**MINIMAL, "stream": True})


def test_stream_false_is_fine() -> None:
    assert ChatCompletionRequest.model_validate({**MINIMAL, "stream": False}).stream is False


def test_completion_tolerates_unknown_fields_and_keeps_them() -> None:
    raw = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "system_fingerprint": "fp",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello", "reasoning_content": "hm"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "x": {}},
        "provider_extra": True,
    }
    completion = ChatCompletion.model_validate(raw)
    assert completion.choices[0].message.content == "Hello"
    assert completion.usage is not None and completion.usage.completion_tokens == 2
    assert completion.model_dump(mode="json", exclude_unset=True) == raw


def test_completion_needs_choices() -> None:
    with pytest.raises(ValidationError):
        ChatCompletion.model_validate({"id": "x", "created": 1, "model": "m"})


def test_completion_needs_at_least_one_choice() -> None:
    # An answer with no choice holds nothing: it must not pass as a result.
    with pytest.raises(ValidationError, match="choices"):
        ChatCompletion.model_validate({"id": "x", "created": 1, "model": "m", "choices": []})
