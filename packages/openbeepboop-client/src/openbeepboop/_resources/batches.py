"""``client.batches``: server-side OpenAI batches (``/openai/v1``), from a JSONL file to results.

The server runs the batch (its lines are ordinary jobs of the key); this
resource uploads the input file, creates the batch, follows it and fetches
its output and error files. Each method builds one request and names the
model its answer parses into, like every resource.

The upload and the create each carry an ``Idempotency-Key`` (generated per
call unless given), kept across the client's retries: a create whose answer
was lost on the way back is answered with the batch it made, instead of
starting a second batch that would run every line again.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import quote

from openbeepboop_schemas import (
    BATCH_ENDPOINT,
    OPENAI_BATCH_CANCEL_PATH,
    OPENAI_BATCH_PATH,
    OPENAI_BATCHES_PATH,
    OPENAI_FILE_CONTENT_PATH,
    OPENAI_FILE_PATH,
    OPENAI_FILES_PATH,
    PURPOSE_BATCH,
    Batch,
    FileObject,
)

from openbeepboop._base_client import RequestOptions
from openbeepboop._constants import IDEMPOTENCY_HEADER

if TYPE_CHECKING:
    from openbeepboop._client import AsyncClient, Client

#: OpenAI's completion window, the default of :meth:`Batches.create`.
DEFAULT_COMPLETION_WINDOW = "24h"


def _batch(body: object) -> Batch:
    return Batch.model_validate(body)


def _file(body: object) -> FileObject:
    return FileObject.model_validate(body)


def _bytes(body: object) -> bytes:
    assert isinstance(body, bytes)
    return body


def _ignored(body: object) -> None:
    return None


def _idempotency(key: str | None) -> dict[str, str]:
    return {IDEMPOTENCY_HEADER: key or str(uuid.uuid4())}


def _upload_options(name: str, handle: IO[bytes], idempotency_key: str | None) -> RequestOptions:
    return RequestOptions(
        "POST",
        OPENAI_FILES_PATH,
        files={"file": (name, handle)},
        data={"purpose": PURPOSE_BATCH},
        headers=_idempotency(idempotency_key),
    )


def _create_options(
    file_id: str, window: str, metadata: dict[str, str] | None, idempotency_key: str | None
) -> RequestOptions:
    body: dict[str, object] = {
        "input_file_id": file_id,
        "endpoint": BATCH_ENDPOINT,
        "completion_window": window,
    }
    if metadata:
        body["metadata"] = metadata
    return RequestOptions(
        "POST", OPENAI_BATCHES_PATH, json=body, headers=_idempotency(idempotency_key)
    )


def _delete_file_options(file_id: str) -> RequestOptions:
    return RequestOptions("DELETE", OPENAI_FILE_PATH.format(file_id=quote(file_id, safe="")))


def _batch_options(batch_id: str, *, cancel: bool = False) -> RequestOptions:
    path = OPENAI_BATCH_CANCEL_PATH if cancel else OPENAI_BATCH_PATH
    return RequestOptions(
        "POST" if cancel else "GET", path.format(batch_id=quote(batch_id, safe=""))
    )


def _content_options(file_id: str) -> RequestOptions:
    path = OPENAI_FILE_CONTENT_PATH.format(file_id=quote(file_id, safe=""))
    return RequestOptions("GET", path, binary=True)


class Batches:
    """Server-side batches for a :class:`~openbeepboop.Client`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def upload(self, path: Path, *, idempotency_key: str | None = None) -> FileObject:
        """Upload a JSONL batch input file (streamed from disk)."""
        with path.open("rb") as handle:
            return self._client.request(_upload_options(path.name, handle, idempotency_key), _file)

    def create(
        self,
        input_file_id: str,
        *,
        completion_window: str = DEFAULT_COMPLETION_WINDOW,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Batch:
        """Start a batch over an uploaded file."""
        return self._client.request(
            _create_options(input_file_id, completion_window, metadata, idempotency_key), _batch
        )

    def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file (one a running batch reads fails that batch)."""
        self._client.request(_delete_file_options(file_id), _ignored)

    def retrieve(self, batch_id: str) -> Batch:
        """One batch, its counts as of now."""
        return self._client.request(_batch_options(batch_id), _batch)

    def cancel(self, batch_id: str) -> Batch:
        """Cancel a batch: queued lines stop, running ones finish."""
        return self._client.request(_batch_options(batch_id, cancel=True), _batch)

    def content(self, file_id: str) -> bytes:
        """A file's bytes (an output or error file)."""
        return self._client.request(_content_options(file_id), _bytes)


class AsyncBatches:
    """Server-side batches for an :class:`~openbeepboop.AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def upload(self, path: Path, *, idempotency_key: str | None = None) -> FileObject:
        """Upload a JSONL batch input file (streamed from disk)."""
        with path.open("rb") as handle:
            return await self._client.request(
                _upload_options(path.name, handle, idempotency_key), _file
            )

    async def create(
        self,
        input_file_id: str,
        *,
        completion_window: str = DEFAULT_COMPLETION_WINDOW,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Batch:
        """Start a batch over an uploaded file."""
        return await self._client.request(
            _create_options(input_file_id, completion_window, metadata, idempotency_key), _batch
        )

    async def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file (one a running batch reads fails that batch)."""
        await self._client.request(_delete_file_options(file_id), _ignored)

    async def retrieve(self, batch_id: str) -> Batch:
        """One batch, its counts as of now."""
        return await self._client.request(_batch_options(batch_id), _batch)

    async def cancel(self, batch_id: str) -> Batch:
        """Cancel a batch: queued lines stop, running ones finish."""
        return await self._client.request(_batch_options(batch_id, cancel=True), _batch)

    async def content(self, file_id: str) -> bytes:
        """A file's bytes (an output or error file)."""
        return await self._client.request(_content_options(file_id), _bytes)
