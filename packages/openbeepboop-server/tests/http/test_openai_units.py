"""Pieces of the OpenAI surface that need no server: stream chunks, completion windows."""

from __future__ import annotations

import pytest
from openbeepboop_server.config import OpenAISection
from openbeepboop_server.http.errors import ApiError
from openbeepboop_server.http.openai.batches import window_seconds
from openbeepboop_server.http.openai.stream import stream_chunks

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def test_stream_chunks_join_to_the_completion() -> None:
    chunks = list(stream_chunks(COMPLETION, include_usage=True))
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello"
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 2
    assert len(list(stream_chunks(COMPLETION, include_usage=False))) == 2


def test_completion_windows_within_the_configured_bounds() -> None:
    limits = OpenAISection(min_completion_window_seconds=60)
    assert window_seconds("24h", limits) == 86400
    assert window_seconds("90m", limits) == 5400
    for bad in ("30s", "25h", "forever", "1d", ""):
        with pytest.raises(ApiError):
            window_seconds(bad, limits)


def test_stream_chunks_keep_every_field_of_the_message() -> None:
    """A self-hosted server's extra fields and a null content reach the stream as they were."""
    tool_call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    completion = {
        **COMPLETION,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "thinking",
                    "tool_calls": [tool_call],
                },
                "logprobs": {"content": [], "refusal": None},
                "finish_reason": "tool_calls",
            }
        ],
    }
    opening, closing = stream_chunks(completion, include_usage=False)
    [choice] = opening["choices"]
    assert choice["delta"] == {
        "role": "assistant",
        "content": None,
        "reasoning_content": "thinking",
        "tool_calls": [{**tool_call, "index": 0}],
    }
    assert choice["logprobs"] == {"content": [], "refusal": None}
    assert closing["choices"][0]["finish_reason"] == "tool_calls"
