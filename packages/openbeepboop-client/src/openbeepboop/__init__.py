"""OpenBeepBoop client: submit LLM jobs to a queue server now, collect results later.

::

    from openbeepboop import Client

    client = Client(base_url="http://localhost:8000", api_key="sk-...")
    job = client.chat.completions.create(
        model="llama3", messages=[{"role": "user", "content": "Hi"}]
    )
    result = job.get(wait=True)
    print(result.choices[0].message.content)

Importing this package does no work: no config is read and no connection is
opened until a client makes its first request.
"""

from __future__ import annotations

from openbeepboop_schemas import ChatCompletion, JobList, JobStatus, ModelList, PollEntry

from openbeepboop._client import AsyncClient, Client
from openbeepboop._constants import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT
from openbeepboop._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BulkSubmitError,
    ClientClosedError,
    ConfigError,
    ConflictError,
    InternalServerError,
    InvalidRequestError,
    JobCancelledError,
    JobError,
    JobFailedError,
    JobTimeoutError,
    NotFoundError,
    OpenBeepBoopError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    UnprocessableEntityError,
)
from openbeepboop._jobs import AsyncJob, Job
from openbeepboop._submit_warnings import ModelNotServedWarning, SubmitWarning

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AsyncJob",
    "AuthenticationError",
    "BadRequestError",
    "BulkSubmitError",
    "ChatCompletion",
    "Client",
    "ClientClosedError",
    "ConfigError",
    "ConflictError",
    "InternalServerError",
    "InvalidRequestError",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobList",
    "JobStatus",
    "JobTimeoutError",
    "ModelList",
    "ModelNotServedWarning",
    "NotFoundError",
    "OpenBeepBoopError",
    "PermissionDeniedError",
    "PollEntry",
    "RateLimitError",
    "RequestTooLargeError",
    "SubmitWarning",
    "UnprocessableEntityError",
    "__version__",
]


def __getattr__(name: str) -> str:
    # Reading package metadata costs a few milliseconds: only on demand.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("openbeepboop-client")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            return "0.0.0"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
