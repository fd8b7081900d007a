"""Every endpoint under ``/openai/v1``, as rows of the server's endpoint table."""

from __future__ import annotations

from openbeepboop_schemas import (
    OPENAI_BATCH_CANCEL_PATH,
    OPENAI_BATCH_PATH,
    OPENAI_BATCHES_PATH,
    OPENAI_CHAT_COMPLETIONS_PATH,
    OPENAI_FILE_CONTENT_PATH,
    OPENAI_FILE_PATH,
    OPENAI_FILES_PATH,
    OPENAI_MODELS_PATH,
    BatchCreateRequest,
)

from openbeepboop_server.http.endpoints import USERS, Endpoint, QueryParam, component
from openbeepboop_server.http.openai import batches, chat, files
from openbeepboop_server.http.openai.files import MAX_FILES_PAGE
from openbeepboop_server.http.user_routes import list_models
from openbeepboop_server.queue.batches import MAX_PAGE as MAX_BATCH_PAGE
from openbeepboop_server.queue.views import BATCH_CURSOR, FILE_CURSOR

TAG = "openai"


def _paging(max_limit: int, cursor: str) -> tuple[QueryParam, ...]:
    return (
        QueryParam(
            "after",
            # Empty is allowed: ``after=`` is the first page.
            {"type": "string", "maxLength": 128, "pattern": f"^({cursor.strip('^$')})?$"},
            "The last id of the previous page (`404` if it has since been deleted).",
        ),
        QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": max_limit}, "Page size."),
    )


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        OPENAI_CHAT_COMPLETIONS_PATH,
        "openaiCreateChatCompletion",
        "Chat completion, synchronously (OpenAI-compatible)",
        chat.chat_completions,
        USERS,
        response=component("ChatCompletion"),
        documented_body=("application/json", component("ChatCompletionRequest")),
        errors=(404, 409, 429, 500, 502, 503, 504),
        tag=TAG,
        description=(
            "Queues the request as an ordinary job of the key and answers `200` with the "
            "`chat.completion` once a node delivered it. `stream: true` answers "
            "`text/event-stream` with `chat.completion.chunk` events and `data: [DONE]`, "
            "emitted once the result is in. A wait past `[openai] sync_timeout_seconds` "
            "answers `504` naming the job id (collect it through `/v1/jobs/{id}`); a job that "
            "failed answers the node's error with the status its type stands for. Answers "
            "about a finished job carry `x-should-retry: false`."
        ),
    ),
    Endpoint(
        "GET",
        OPENAI_MODELS_PATH,
        "openaiListModels",
        "Models that recently seen nodes serve (OpenAI-compatible)",
        list_models,
        USERS,
        response=component("ModelList"),
        tag=TAG,
    ),
    Endpoint(
        "POST",
        OPENAI_FILES_PATH,
        "openaiUploadFile",
        "Upload a batch input file (OpenAI-compatible)",
        files.upload,
        USERS,
        response=component("FileObject"),
        idempotent=True,
        errors=(409,),
        documented_body=(
            "multipart/form-data",
            {
                "type": "object",
                "required": ["file", "purpose"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "purpose": {"type": "string", "enum": ["batch"]},
                },
            },
        ),
        tag=TAG,
        description=(
            "Multipart with `file` and `purpose=batch`. Stored in the database in parts, "
            "never whole in memory. Over `[openai] max_file_bytes`: `413`; over "
            "`max_file_lines`: `400`."
        ),
    ),
    Endpoint(
        "GET",
        OPENAI_FILES_PATH,
        "openaiListFiles",
        "The caller's files, newest first (OpenAI-compatible)",
        files.list_files,
        USERS,
        response=component("FileList"),
        query=(
            *_paging(MAX_FILES_PAGE, FILE_CURSOR),
            QueryParam("purpose", {"type": "string"}, "Only files of this purpose."),
            QueryParam("order", {"type": "string", "enum": ["desc"]}, "Newest first."),
        ),
        errors=(404,),
        tag=TAG,
    ),
    Endpoint(
        "GET",
        OPENAI_FILE_PATH,
        "openaiRetrieveFile",
        "One file (OpenAI-compatible)",
        files.retrieve,
        USERS,
        response=component("FileObject"),
        errors=(404,),
        tag=TAG,
    ),
    Endpoint(
        "DELETE",
        OPENAI_FILE_PATH,
        "openaiDeleteFile",
        "Delete a file (OpenAI-compatible)",
        files.delete,
        USERS,
        response=component("FileDeleted"),
        errors=(404,),
        tag=TAG,
    ),
    Endpoint(
        "GET",
        OPENAI_FILE_CONTENT_PATH,
        "openaiFileContent",
        "One file's bytes (OpenAI-compatible)",
        files.content,
        USERS,
        response={"type": "string", "format": "binary"},
        media_type="application/octet-stream",
        errors=(404,),
        tag=TAG,
    ),
    Endpoint(
        "POST",
        OPENAI_BATCHES_PATH,
        "openaiCreateBatch",
        "Create a batch over an uploaded file (OpenAI-compatible)",
        batches.create,
        USERS,
        body=BatchCreateRequest,
        response=component("Batch"),
        idempotent=True,
        errors=(404,),
        tag=TAG,
        description=(
            "Answers the batch `validating`; every line is then checked before any job "
            "exists (a bad line fails the batch with line-numbered `errors`). Each line "
            "becomes an ordinary job of the key; `GET /v1/jobs?batch_id=` lists them."
        ),
    ),
    Endpoint(
        "GET",
        OPENAI_BATCHES_PATH,
        "openaiListBatches",
        "The caller's batches, newest first (OpenAI-compatible)",
        batches.list_batches,
        USERS,
        response=component("BatchList"),
        query=_paging(MAX_BATCH_PAGE, BATCH_CURSOR),
        errors=(404,),
        tag=TAG,
    ),
    Endpoint(
        "GET",
        OPENAI_BATCH_PATH,
        "openaiRetrieveBatch",
        "One batch (OpenAI-compatible)",
        batches.retrieve,
        USERS,
        response=component("Batch"),
        errors=(404,),
        tag=TAG,
    ),
    Endpoint(
        "POST",
        OPENAI_BATCH_CANCEL_PATH,
        "openaiCancelBatch",
        "Cancel a batch (OpenAI-compatible)",
        batches.cancel,
        USERS,
        response=component("Batch"),
        errors=(400, 404),
        tag=TAG,
    ),
)
