"""Every endpoint under ``/openai/v1``, as rows of the server's endpoint table."""

from __future__ import annotations

from openbeepboop_schemas import (
    OPENAI_CHAT_COMPLETIONS_PATH,
    OPENAI_MODELS_PATH,
)

from openbeepboop_server.http.endpoints import USERS, Endpoint, component
from openbeepboop_server.http.openai import chat
from openbeepboop_server.http.user_routes import list_models

TAG = "openai"

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
        errors=(404, 409, 429, 500, 503, 504),
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
)
