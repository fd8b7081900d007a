"""JSON Schema of every wire model, laid out as OpenAPI ``components``.

The server's ``/openapi.json`` is assembled from this, so the document users
read and the models the code validates with cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from openbeepboop_schemas.chat import ChatCompletion, ChatCompletionRequest
from openbeepboop_schemas.errors import ErrorEnvelope
from openbeepboop_schemas.jobs import (
    BulkSubmitRequest,
    BulkSubmitResponse,
    Job,
    JobList,
    ModelList,
    PollEntry,
    PollRequest,
)
from openbeepboop_schemas.openai_api import (
    Batch,
    BatchCreateRequest,
    BatchList,
    FileDeleted,
    FileList,
    FileObject,
)
from openbeepboop_schemas.pool import PoolStatus
from openbeepboop_schemas.queue import (
    FetchRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    Lease,
    LeaseWatchRequest,
    LeaseWatchResponse,
    SubmitRequest,
    SubmitResponse,
)
from openbeepboop_schemas.usage import UsageReport

#: Every top-level body of the contract, by the name it has in the schema.
CONTRACT_MODELS: tuple[type[BaseModel], ...] = (
    ChatCompletionRequest,
    ChatCompletion,
    Job,
    BulkSubmitRequest,
    BulkSubmitResponse,
    PollRequest,
    PollEntry,
    JobList,
    ModelList,
    FetchRequest,
    Lease,
    SubmitRequest,
    SubmitResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    LeaseWatchRequest,
    LeaseWatchResponse,
    PoolStatus,
    ErrorEnvelope,
    FileObject,
    FileList,
    FileDeleted,
    BatchCreateRequest,
    Batch,
    BatchList,
    UsageReport,
)

REF_TEMPLATE = "#/components/schemas/{model}"


def component_schemas() -> dict[str, Any]:
    """``{name: schema}`` for every contract model and the models they use.

    Every model uses its validation schema: requests are what the server
    accepts, and responses are what a client can parse.
    """
    _, top = models_json_schema(
        [(model, "validation") for model in CONTRACT_MODELS], ref_template=REF_TEMPLATE
    )
    schemas: dict[str, Any] = top.get("$defs", {})
    return schemas
