"""The objects of the OpenAI-compatible surface (``/openai/v1``): files and batches.

They are OpenAI's own shapes, field for field, so that the official SDK's
``FileObject`` and ``Batch`` models read them unchanged; the server writes
them and the client library reads them (unknown fields tolerated, as
everywhere). The chat completion and model list answers reuse
:mod:`~openbeepboop_schemas.chat` and :mod:`~openbeepboop_schemas.jobs`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from openbeepboop_schemas._base import StrictBody, TolerantBody

#: Prefix of file ids.
FILE_ID_PREFIX = "file-"
#: Prefix of batch ids.
BATCH_ID_PREFIX = "batch_"
#: The one endpoint a batch's lines may call.
BATCH_ENDPOINT = "/v1/chat/completions"
#: The one file purpose a user may upload; outputs carry ``batch_output``.
PURPOSE_BATCH = "batch"
PURPOSE_BATCH_OUTPUT = "batch_output"

#: OpenAI's bounds on a batch's ``metadata``: what a caller may attach is stored
#: with the batch and sent back in every answer about it, so it must stay small.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
#: OpenAI's bounds on ``output_expires_after.seconds`` (one hour to 30 days).
MIN_OUTPUT_EXPIRY_SECONDS = 3600
MAX_OUTPUT_EXPIRY_SECONDS = 2_592_000

#: ``completion_window``: ASCII digits (``\d`` would also take Arabic-Indic and other
#: scripts' digits), an optional fraction and one unit, nothing around them.
COMPLETION_WINDOW_PATTERN = r"^[0-9]+(?:\.[0-9]+)?[hms]$"
_COMPLETION_WINDOW = re.compile(r"[0-9]+(?:\.[0-9]+)?[hms]")

Metadata = Annotated[
    dict[
        Annotated[str, StringConstraints(max_length=MAX_METADATA_KEY_CHARS)],
        Annotated[str, StringConstraints(max_length=MAX_METADATA_VALUE_CHARS)],
    ],
    Field(max_length=MAX_METADATA_PAIRS),
]

BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
#: Statuses a batch never leaves.
BATCH_FINAL_STATUSES = frozenset({"failed", "completed", "expired", "cancelled"})


class FileObject(TolerantBody):
    """An uploaded (or generated) file, as ``client.files.create`` returns it."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class _CursorPage(TolerantBody):
    """OpenAI's cursor page: ``after=last_id`` asks for the next one while ``has_more``."""

    object: Literal["list"] = "list"
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None


class FileList(_CursorPage):
    """A page of files, newest first."""

    data: list[FileObject]


class FileDeleted(TolerantBody):
    """The answer to ``DELETE /files/{id}``."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class OutputExpiresAfter(StrictBody):
    """OpenAI's ``output_expires_after`` of a batch (accepted, not applied: files are kept)."""

    anchor: Literal["created_at"]
    seconds: int = Field(ge=MIN_OUTPUT_EXPIRY_SECONDS, le=MAX_OUTPUT_EXPIRY_SECONDS)


class BatchCreateRequest(StrictBody):
    """``POST /batches``: which file, which endpoint, how long it may take.

    ``metadata`` is held to OpenAI's bounds (:data:`MAX_METADATA_PAIRS` pairs,
    keys and values of at most :data:`MAX_METADATA_KEY_CHARS` and
    :data:`MAX_METADATA_VALUE_CHARS` characters): it is stored with the batch
    and repeated in every answer listing it, so without a bound one key could
    make each page of ``GET /batches`` tens of megabytes.
    """

    input_file_id: str = Field(min_length=1, max_length=128)
    endpoint: Literal["/v1/chat/completions"]
    #: OpenAI's ``24h`` is what the document shows; a server may also take shorter
    #: windows such as ``30m`` or ``90s`` (docs/openai.md, "Configuration").
    completion_window: str = Field(
        min_length=1,
        max_length=32,
        pattern=COMPLETION_WINDOW_PATTERN,
        json_schema_extra={"enum": ["24h"]},
    )
    metadata: Metadata | None = None
    output_expires_after: OutputExpiresAfter | None = None

    @field_validator("completion_window", mode="before")
    @classmethod
    def _window_shape(cls, value: Any) -> Any:
        """Say what a window looks like, rather than quote the pattern at the caller."""
        if isinstance(value, str) and not _COMPLETION_WINDOW.fullmatch(value):
            raise PydanticCustomError(
                "completion_window",
                "expected a duration like '24h': ASCII digits, then 'h', 'm' or 's', "
                "with nothing before or after",
            )
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_bounds(cls, value: Any) -> Any:
        """Name OpenAI's limit, checked before the pairs are (a huge map is refused at once).

        The message never repeats the offending key or value, which may be huge.
        """
        if not isinstance(value, dict):
            return value
        if len(value) > MAX_METADATA_PAIRS:
            raise PydanticCustomError(
                "metadata_too_large",
                "at most {limit} key-value pairs are allowed, got {count}",
                {"limit": MAX_METADATA_PAIRS, "count": len(value)},
            )
        for key, item in value.items():
            if isinstance(key, str) and len(key) > MAX_METADATA_KEY_CHARS:
                raise PydanticCustomError(
                    "metadata_too_large",
                    "keys are at most {limit} characters, one has {count}",
                    {"limit": MAX_METADATA_KEY_CHARS, "count": len(key)},
                )
            if isinstance(item, str) and len(item) > MAX_METADATA_VALUE_CHARS:
                raise PydanticCustomError(
                    "metadata_too_large",
                    "values are at most {limit} characters; the one of key '{key}' has {count}",
                    {"limit": MAX_METADATA_VALUE_CHARS, "key": key, "count": len(item)},
                )
        return value


class BatchRequestCounts(TolerantBody):
    """How many of a batch's lines there are, and how many finished each way."""

    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchLineError(TolerantBody):
    """Why a batch (or one of its input lines) was refused; ``line`` counts from 1."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(TolerantBody):
    """A failed batch's errors, in OpenAI's ``list`` shape."""

    object: Literal["list"] = "list"
    data: list[BatchLineError]


class Batch(TolerantBody):
    """A batch, as ``client.batches.retrieve`` returns it."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts = Field(default_factory=BatchRequestCounts)
    metadata: dict[str, str] | None = None


class BatchList(_CursorPage):
    """A page of batches, newest first."""

    data: list[Batch]
