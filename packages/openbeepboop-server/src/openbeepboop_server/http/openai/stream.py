"""A finished ``chat.completion`` told as the ``chat.completion.chunk`` events of a stream.

A node runs its call to completion, so a streamed answer is built from the
whole result once it is in (docs/openai.md, "Streaming granularity"). What
the stream must keep is everything the message held: the SDK's stream
accumulator (``client.chat.completions.stream(...).get_final_completion()``)
and code that joins deltas by hand must end with the same message a
non-streamed call returns — a legacy ``function_call``, a ``refusal``, a
reasoning field a self-hosted server adds, the choice's ``logprobs`` —
not only its role, content and tool calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic_core import to_json


def stream_chunks(completion: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects that join to ``completion``.

    Per choice: one chunk whose delta is the whole message (tool calls each
    with their ``index``, as stream deltas number them) and which carries the
    choice's ``logprobs``, then one with the ``finish_reason``; with
    ``include_usage``, a last chunk with no choices and the usage.
    """
    base = {
        "id": completion.get("id"),
        "object": "chat.completion.chunk",
        "created": completion.get("created"),
        "model": completion.get("model"),
    }
    if completion.get("system_fingerprint") is not None:
        base["system_fingerprint"] = completion["system_fingerprint"]
    for position, choice in enumerate(completion.get("choices") or ()):
        index = choice.get("index", position)
        opening: dict[str, Any] = {
            "index": index,
            "delta": _delta(choice.get("message") or {}),
            "finish_reason": None,
        }
        if choice.get("logprobs") is not None:
            opening["logprobs"] = choice["logprobs"]
        yield {**base, "choices": [opening]}
        finish = choice.get("finish_reason") or "stop"
        yield {**base, "choices": [{"index": index, "delta": {}, "finish_reason": finish}]}
    if include_usage:
        yield {**base, "choices": [], "usage": completion.get("usage")}


def _delta(message: dict[str, Any]) -> dict[str, Any]:
    """The message as one delta: every field it has, ``content`` as it was (``null`` stays)."""
    delta = {name: value for name, value in message.items() if value is not None}
    delta["role"] = message.get("role") or "assistant"
    delta["content"] = message.get("content")
    tool_calls = message.get("tool_calls")
    if tool_calls:
        delta["tool_calls"] = [
            {**tool_call, "index": number} for number, tool_call in enumerate(tool_calls)
        ]
    return delta


def event_stream(completion: dict[str, Any], include_usage: bool) -> bytes:
    """The whole ``text/event-stream`` body: one ``data:`` event per chunk, then ``[DONE]``."""
    events = [
        b"data: " + to_json(chunk) + b"\n\n" for chunk in stream_chunks(completion, include_usage)
    ]
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)
