"""The OpenBeepBoop wire contract: every body that crosses HTTP, and where it goes.

Pydantic v2 models for every request and response body, every HTTP path
(:mod:`~openbeepboop_schemas.paths`), the size limits, job statuses and key
roles. Server, node, client and bench import them from here and nowhere else.
The package does no I/O.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from openbeepboop_schemas.chat import (
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    CompletionMessage,
    Usage,
)
from openbeepboop_schemas.errors import ErrorBody, ErrorEnvelope
from openbeepboop_schemas.jobs import (
    MODEL_NOT_SERVED,
    WARNING_HEADER,
    BulkSubmitRequest,
    BulkSubmitResponse,
    Job,
    JobError,
    JobList,
    JobWarning,
    ModelCard,
    ModelList,
    PollEntry,
    PollRequest,
)
from openbeepboop_schemas.json_schema import CONTRACT_MODELS, component_schemas
from openbeepboop_schemas.limits import (
    JOB_ID_PREFIX,
    MAX_BULK_SUBMIT,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_FETCH_JOBS,
    MAX_HEARTBEAT_LEASES,
    MAX_NODE_MODELS,
    MAX_POLL_IDS,
    MAX_SUBMIT_OUTCOMES,
    MAX_WAIT_SECONDS,
)
from openbeepboop_schemas.paths import (
    BULK_SUBMIT_PATH,
    CHAT_COMPLETIONS_PATH,
    FETCH_PATH,
    HEALTHZ_PATH,
    HEARTBEAT_PATH,
    JOB_CANCEL_PATH,
    JOB_PATH,
    JOBS_PATH,
    METRICS_PATH,
    MODELS_PATH,
    OPENAPI_PATH,
    POLL_PATH,
    QUEUE_SUBMIT_PATH,
    job_cancel_path,
    job_path,
)
from openbeepboop_schemas.queue import (
    ANY_MODEL,
    AckStatus,
    ErrorOutcome,
    FetchRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    Lease,
    LeaseRef,
    NodeError,
    Outcome,
    ReleaseOutcome,
    ResultOutcome,
    SubmitAck,
    SubmitRequest,
    SubmitResponse,
)
from openbeepboop_schemas.status import NOT_FOUND, TERMINAL_STATUSES, JobStatus, Role

try:
    __version__ = version("openbeepboop-schemas")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "ANY_MODEL",
    "BULK_SUBMIT_PATH",
    "CHAT_COMPLETIONS_PATH",
    "CONTRACT_MODELS",
    "FETCH_PATH",
    "HEALTHZ_PATH",
    "HEARTBEAT_PATH",
    "JOBS_PATH",
    "JOB_CANCEL_PATH",
    "JOB_ID_PREFIX",
    "JOB_PATH",
    "MAX_BULK_SUBMIT",
    "MAX_ERROR_MESSAGE_CHARS",
    "MAX_FETCH_JOBS",
    "MAX_HEARTBEAT_LEASES",
    "MAX_NODE_MODELS",
    "MAX_POLL_IDS",
    "MAX_SUBMIT_OUTCOMES",
    "MAX_WAIT_SECONDS",
    "METRICS_PATH",
    "MODELS_PATH",
    "MODEL_NOT_SERVED",
    "NOT_FOUND",
    "OPENAPI_PATH",
    "POLL_PATH",
    "QUEUE_SUBMIT_PATH",
    "TERMINAL_STATUSES",
    "WARNING_HEADER",
    "AckStatus",
    "BulkSubmitRequest",
    "BulkSubmitResponse",
    "ChatCompletion",
    "ChatCompletionRequest",
    "ChatMessage",
    "Choice",
    "CompletionMessage",
    "ErrorBody",
    "ErrorEnvelope",
    "ErrorOutcome",
    "FetchRequest",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "Job",
    "JobError",
    "JobList",
    "JobStatus",
    "JobWarning",
    "Lease",
    "LeaseRef",
    "ModelCard",
    "ModelList",
    "NodeError",
    "Outcome",
    "PollEntry",
    "PollRequest",
    "ReleaseOutcome",
    "ResultOutcome",
    "Role",
    "SubmitAck",
    "SubmitRequest",
    "SubmitResponse",
    "Usage",
    "__version__",
    "component_schemas",
    "job_cancel_path",
    "job_path",
]
