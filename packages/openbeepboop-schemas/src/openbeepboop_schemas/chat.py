"""The OpenAI chat completion request a job carries, and the completion it yields.

The request validates what the queue relies on (``model``, ``messages``) and a
few numeric ranges, and keeps every other OpenAI field exactly as sent so that
a node can forward it. The completion is read leniently: whatever the LLM
server returned is kept, including fields this version does not know.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from openbeepboop_schemas._base import TolerantBody

#: ``int | float`` keeps ``1`` as ``1`` (not ``1.0``) so pass-through is exact.
Number = int | float

MessageRole = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ChatMessage(TolerantBody):
    """One message of a conversation; extra OpenAI keys (name, tool_calls, ...) are kept."""

    role: MessageRole
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(TolerantBody):
    """An OpenAI ``POST /v1/chat/completions`` body, as a job's payload.

    Unknown fields are allowed and preserved: dump with
    ``model_dump(mode="json", exclude_unset=True)`` to get back what was sent.
    """

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = None
    temperature: Number | None = Field(default=None, ge=0, le=2)
    top_p: Number | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    presence_penalty: Number | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: Number | None = Field(default=None, ge=-2, le=2)

    @field_validator("stream")
    @classmethod
    def _no_streaming(cls, value: bool | None) -> bool | None:
        # A queued job has nobody listening for a stream; say so instead of
        # accepting a request whose caller expects server-sent events.
        if value:
            raise ValueError(
                "stream=true is not supported: jobs run asynchronously; "
                "submit without stream and collect the result with poll"
            )
        return value

    def to_payload(self) -> dict[str, Any]:
        """The request as JSON-ready data, with only the fields the caller sent."""
        return self.model_dump(mode="json", exclude_unset=True)


class CompletionMessage(TolerantBody):
    """The assistant's message in a completion choice."""

    role: str = "assistant"
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class Choice(TolerantBody):
    """One choice of a completion."""

    index: int = 0
    message: CompletionMessage
    finish_reason: str | None = None


class Usage(TolerantBody):
    """Token counts as the LLM server reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(TolerantBody):
    """An OpenAI ``chat.completion`` object: a job's result."""

    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
