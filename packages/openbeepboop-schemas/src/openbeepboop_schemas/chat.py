"""The OpenAI chat completion request a job carries, and the completion it yields.

The request validates what the queue relies on (``model``, ``messages``) and a
few numeric ranges, and keeps every other OpenAI field exactly as sent so that
a node can forward it. The completion is read leniently: whatever the LLM
server returned is kept, including fields this version does not know.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PlainValidator, WithJsonSchema, field_validator

from openbeepboop_schemas._base import JsonInt, TolerantBody
from openbeepboop_schemas.printable import ModelName

#: The range of a job's ``priority`` (a native field; higher is claimed first).
MIN_PRIORITY = -1000
MAX_PRIORITY = 1000


def _between(low: float, high: float) -> Callable[[Any], Any]:
    """A check that a value is a JSON number in ``[low, high]``, returned as sent."""

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return value

    return check


def _number_schema(low: float, high: float) -> WithJsonSchema:
    return WithJsonSchema({"type": "number", "minimum": low, "maximum": high})


# Plain validators rather than ``int | float`` with bounds: ``1`` stays ``1``
# (pass-through is exact), an error points at the field itself (no union branch
# in its ``loc``), and the JSON Schema is standard. ``Any`` because the value is
# handed on untouched, whichever JSON number it was.
UnitInterval = Annotated[Any, PlainValidator(_between(0, 1)), _number_schema(0, 1)]
Temperature = Annotated[Any, PlainValidator(_between(0, 2)), _number_schema(0, 2)]
Penalty = Annotated[Any, PlainValidator(_between(-2, 2)), _number_schema(-2, 2)]

#: The JSON Schema of ``stream``: the validator below refuses ``true``.
_STREAM_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "boolean", "const": False}, {"type": "null"}],
    "default": None,
    "description": "Must be false or absent: jobs run asynchronously.",
}

#: A strict JSON integer in the priority range. The schema is spelled out: with
#: the number check in front, pydantic would write its own ``ge``/``le`` into it.
Priority = Annotated[
    JsonInt,
    Field(ge=MIN_PRIORITY, le=MAX_PRIORITY),
    WithJsonSchema({"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY}),
]

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

    model: ModelName
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = Field(
        default=None, json_schema_extra=lambda schema: schema.update(_STREAM_SCHEMA)
    )
    temperature: Temperature | None = None
    top_p: UnitInterval | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    #: Native, not OpenAI: the queue's claim order (docs/api.md, "Claim order").
    #: Stored beside the job, never forwarded to the LLM.
    priority: Priority | None = Field(
        default=None,
        description=(
            "Native field: higher is claimed first (default 0), up to the API key's "
            "max_priority; fair share between owners applies within a priority level."
        ),
    )

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
    """An OpenAI ``chat.completion`` object: a job's result.

    At least one choice: an answer without one holds nothing for the user,
    and a job that ended with it must fail, not pass as ``COMPLETED``.
    """

    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[Choice] = Field(min_length=1)
    usage: Usage | None = None
