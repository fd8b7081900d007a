"""``/openai/v1/files``: upload (multipart, ``purpose=batch``), list, retrieve, content, delete.

An upload is parsed by Starlette's multipart parser, which spools the file
part to a temporary file past 1 MB, and is then copied into the database
part by part (:mod:`openbeepboop_server.queue.files`): a 200 MB upload never
sits in memory whole. The body limit of this one path is ``[openai]
max_file_bytes`` plus room for the multipart envelope, instead of ``[server]
max_body_bytes``. An upload honours ``Idempotency-Key``: its request hash is
the SHA-256 of the purpose, the filename and the file's bytes, not of the body
(a retry sends another multipart boundary).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import IO

from anyio.to_thread import run_sync
from openbeepboop_schemas import OPENAI_FILES_PATH, PURPOSE_BATCH, FileDeleted, FileObject
from python_multipart.exceptions import FormParserError
from sqlalchemy.exc import IntegrityError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from openbeepboop_server.config import Settings
from openbeepboop_server.http.bodies import model_response
from openbeepboop_server.http.endpoints import Call
from openbeepboop_server.http.errors import ApiError
from openbeepboop_server.http.openai.paging import bad_cursor, page_query
from openbeepboop_server.http.user_routes import idempotency_key_header
from openbeepboop_server.queue.files import (
    CHUNK_BYTES,
    FileRefusedError,
    FileStore,
    StoredFile,
    UploadInProgressError,
)
from openbeepboop_server.queue.views import CursorError

#: Room for the multipart boundaries and the other fields around the file itself.
MULTIPART_SLACK_BYTES = 64 * 1024
#: OpenAI's own default and largest page of ``GET /files``.
MAX_FILES_PAGE = 10_000


def upload_limits(settings: Settings) -> dict[str, int]:
    """The upload path's own body limit, for the body size middleware."""
    return {OPENAI_FILES_PATH: settings.openai.max_file_bytes + MULTIPART_SLACK_BYTES}


def file_not_found(file_id: str, param: str = "file_id") -> ApiError:
    """The same 404 for an unknown file and another key's file; ``param``: where it was named."""
    return ApiError(404, f"No such File object: {file_id}", param=param, code="file_not_found")


def _parts(stream: IO[bytes]) -> Iterator[bytes]:
    while block := stream.read(CHUNK_BYTES):
        yield block


def upload_hash(purpose: str, filename: str, stream: IO[bytes]) -> str:
    """What an upload's ``Idempotency-Key`` remembers of it: purpose, filename and bytes.

    Not the body's hash: a client retrying an upload builds a new multipart
    body with a new random boundary around the same file.
    """
    digest = hashlib.sha256(f"{purpose}\0{filename}\0".encode("utf-8", "surrogatepass"))
    for block in _parts(stream):
        digest.update(block)
    stream.seek(0)
    return digest.hexdigest()


def _missing_file(form: FormData) -> ApiError:
    """The 400 for a form whose ``file`` is not a file part, saying what is wrong."""
    if isinstance(form.get("file"), str):
        # Starlette reads a part without a filename (or with filename="") as a plain field.
        message = (
            "'file': the part named 'file' has no filename, so it is read as a text field; "
            'send it as a file part (Content-Disposition: form-data; name="file"; '
            'filename="input.jsonl")'
        )
    else:
        # The multipart parser drops a part the body ends inside of, so a
        # body cut short before its closing boundary lands here too.
        message = (
            "'file': the body has no complete file part named 'file' (is it cut short "
            "before its closing boundary?)"
        )
    return ApiError(400, message, param="file", code="invalid_value")


async def upload(call: Call) -> Response:
    """Store one uploaded file of purpose ``batch``."""
    request = call.request
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(
            400,
            "expected a multipart/form-data body with 'file' and 'purpose'",
            code="invalid_body",
        )
    limits = call.context.settings.openai
    async with _multipart_form(request) as form:
        purpose = form.get("purpose")
        uploaded = form.get("file")
        if purpose != PURPOSE_BATCH:
            raise ApiError(
                400,
                f"'purpose': only '{PURPOSE_BATCH}' files can be uploaded here",
                param="purpose",
                code="invalid_value",
            )
        if not isinstance(uploaded, UploadFile):
            raise _missing_file(form)
        key = idempotency_key_header(call)
        filename = uploaded.filename or "upload.jsonl"
        store = FileStore(call.context.db)
        try:
            stored = await run_sync(
                lambda: _save(
                    store,
                    call,
                    key,
                    filename,
                    uploaded.file,
                    limits.max_file_bytes,
                    limits.max_file_lines,
                )
            )
        except UploadInProgressError as exc:
            raise ApiError(
                409,
                str(exc),
                param="Idempotency-Key",
                type="conflict_error",
                code="idempotency_key_in_use",
            ) from None
        except FileRefusedError as exc:
            raise ApiError(
                413 if exc.too_large else 400,
                str(exc),
                param="file",
                code="file_too_large" if exc.too_large else "too_many_lines",
            ) from None
    return model_response(stored)


def _save(
    store: FileStore,
    call: Call,
    key: str | None,
    filename: str,
    stream: IO[bytes],
    max_bytes: int,
    max_lines: int,
) -> FileObject:
    """Store the upload, or answer the file an earlier one with the same key stored."""
    stale_after = call.context.settings.openai.stale_upload_seconds
    request_hash = None
    if key is not None:
        request_hash = upload_hash(PURPOSE_BATCH, filename, stream)
        earlier = store.find_by_key(call.user, key, request_hash, stale_after=stale_after)
        if earlier is not None:
            return earlier
    try:
        return store.save(
            call.user.key_id,
            filename,
            PURPOSE_BATCH,
            _parts(stream),
            max_bytes=max_bytes,
            max_lines=max_lines,
            idempotency_key=key,
            request_hash=request_hash,
        )
    except IntegrityError:
        if key is None or request_hash is None:
            raise
        # A concurrent twin with the same key inserted its row first.
        earlier = store.find_by_key(call.user, key, request_hash, stale_after=stale_after)
        if earlier is None:
            raise
        return earlier


@contextlib.asynccontextmanager
async def _multipart_form(request: Request) -> AsyncIterator[FormData]:
    """The upload's form, closed after; a body the multipart parser cannot read is a 400.

    Starlette answers its own refusals (too many files or fields) with a 400,
    but lets the parser's errors (a bad boundary, a broken part header) out
    as exceptions: a 500 for what is the client's mistake.
    """
    try:
        form = await request.form(max_files=1, max_fields=16)
    except (FormParserError, HTTPException) as exc:
        # Starlette's own refusals (a missing boundary, too many parts) carry their text
        # in ``detail``; the parser's in the exception itself.
        detail = exc.detail if isinstance(exc, HTTPException) else exc
        raise ApiError(
            400, f"the multipart body cannot be read: {detail}", code="invalid_body"
        ) from None
    try:
        yield form
    finally:
        await form.close()


async def list_files(call: Call) -> Response:
    """The caller's files, newest first (``after``, ``limit``, ``purpose``, ``order=desc``)."""
    limit, after, extra = page_query(
        call.request,
        default_limit=MAX_FILES_PAGE,
        max_limit=MAX_FILES_PAGE,
        extra=("purpose", "order"),
    )
    if extra.get("order", "desc") != "desc":
        raise ApiError(
            400, "'order': only 'desc' is supported", param="order", code="invalid_value"
        )
    store = FileStore(call.context.db)
    try:
        page = await run_sync(
            lambda: store.list_page(
                call.user, limit=limit, after=after, purpose=extra.get("purpose")
            )
        )
    except CursorError as exc:
        raise bad_cursor(exc) from None
    return model_response(page)


async def _found(call: Call) -> StoredFile:
    file_id = call.request.path_params["file_id"]
    found = await run_sync(FileStore(call.context.db).find, call.user, file_id)
    if found is None:
        raise file_not_found(file_id)
    return found


async def retrieve(call: Call) -> Response:
    """One file's object."""
    return model_response((await _found(call)).view)


async def content(call: Call) -> Response:
    """One file's bytes, streamed part by part."""
    found = await _found(call)
    store = FileStore(call.context.db)

    async def parts() -> AsyncIterator[bytes]:
        # Ends early (FileGoneError) if the file is deleted meanwhile: the
        # connection closes short of the content-length, so no client can
        # take a cut file for a whole one.
        chunks = store.read_all(found)
        while (data := await run_sync(next, chunks, None)) is not None:
            yield data

    return StreamingResponse(
        parts(),
        media_type="application/octet-stream",
        headers={"content-length": str(found.view.bytes)},
    )


async def delete(call: Call) -> Response:
    """Delete a file (a batch already running keeps its jobs)."""
    file_id = call.request.path_params["file_id"]
    deleted = await run_sync(FileStore(call.context.db).delete, call.user, file_id)
    if not deleted:
        raise file_not_found(file_id)
    return model_response(FileDeleted(id=file_id))
