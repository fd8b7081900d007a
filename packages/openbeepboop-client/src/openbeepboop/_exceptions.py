"""Every error the client raises, under one base class.

The HTTP errors are named and shaped like the OpenAI SDK's, one class per
status code, so code written against ``openai`` catches the same names here::

    OpenBeepBoopError
    ├── ConfigError                      no server URL / API key, unreadable config file
    ├── InvalidRequestError (ValueError) a request rejected before it was sent
    ├── ClientClosedError (RuntimeError) a call on a client after close()
    ├── APIError                         anything that went wrong talking to the server
    │   ├── APIConnectionError           the server could not be reached
    │   │   └── APITimeoutError          ... or did not answer in time
    │   ├── APIResponseValidationError   the server answered something we cannot read
    │   └── APIStatusError               the server answered 4xx/5xx (status_code, request_id)
    │       ├── BadRequestError          400
    │       ├── AuthenticationError      401
    │       ├── PermissionDeniedError    403
    │       ├── NotFoundError            404 (also an id that poll reports NOT_FOUND)
    │       ├── ConflictError            409
    │       ├── RequestTooLargeError     413
    │       ├── UnprocessableEntityError 422 (an Idempotency-Key sent with another request)
    │       ├── RateLimitError           429
    │       └── InternalServerError      5xx
    ├── BulkSubmitError                  a bulk submit stopped part-way; carries the jobs made
    └── JobError                         a job did not produce a result
        ├── JobFailedError               it ended FAILED (error message and type kept)
        ├── JobCancelledError            it ended CANCELLED
        └── JobTimeoutError (TimeoutError) it was not finished when the wait ran out
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import httpx

from openbeepboop._constants import REQUEST_ID_HEADERS

if TYPE_CHECKING:
    from openbeepboop_schemas import Job, PollEntry

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BulkSubmitError",
    "ClientClosedError",
    "ConfigError",
    "ConflictError",
    "InternalServerError",
    "InvalidRequestError",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobTimeoutError",
    "NotFoundError",
    "OpenBeepBoopError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
]


class OpenBeepBoopError(Exception):
    """Base class of every error this package raises."""


class ConfigError(OpenBeepBoopError):
    """The client cannot be configured: no server URL or key, or a bad config file."""


class InvalidRequestError(OpenBeepBoopError, ValueError):
    """A request that would be rejected, caught before anything was sent."""


class ClientClosedError(OpenBeepBoopError, RuntimeError):
    """A call on a client after ``close()`` (or its ``with`` block), or whose pool was closed.

    A closed client's connections are gone for good; make a new client.
    It is a RuntimeError, like httpx's own error for a closed client.
    """


class APIError(OpenBeepBoopError):
    """Talking to the server failed.

    ``request`` is the HTTP request that failed; ``body`` the decoded response
    body, when there was one.
    """

    message: str
    request: httpx.Request | None
    body: object | None
    #: True when a try of this call may have reached the server without its
    #: answer arriving (it connected, then timed out or the connection broke,
    #: or a gateway answered 502/504): the call may have taken effect. A
    #: submit's job may then be queued; its Idempotency-Key sent again finds it.
    answer_lost: bool = False

    def __init__(
        self, message: str, request: httpx.Request | None = None, *, body: object | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request = request
        self.body = body


class APIConnectionError(APIError):
    """The server could not be reached (refused, reset, DNS, TLS, ...)."""

    def __init__(self, request: httpx.Request | None = None, *, message: str | None = None) -> None:
        where = f" at {_origin(request)}" if request is not None else ""
        super().__init__(message or f"could not connect to the server{where}", request)


class APITimeoutError(APIConnectionError):
    """The server did not answer within the timeout."""

    def __init__(self, request: httpx.Request | None = None, *, message: str | None = None) -> None:
        where = f" at {_origin(request)}" if request is not None else ""
        super().__init__(request, message=message or f"the server{where} did not answer in time")


class APIResponseValidationError(APIError):
    """The server answered 2xx with a body that does not fit the wire contract."""

    response: httpx.Response | None

    def __init__(
        self,
        message: str,
        response: httpx.Response | None = None,
        *,
        body: object | None = None,
    ) -> None:
        super().__init__(message, response.request if response is not None else None, body=body)
        self.response = response


class APIStatusError(APIError):
    """The server answered with a 4xx or 5xx status.

    ``message`` is the server's own message from the OpenAI error envelope when
    it sent one; ``type``, ``param`` and ``code`` come from the same envelope.
    """

    response: httpx.Response
    status_code: int
    request_id: str | None
    type: str | None
    param: str | None
    code: str | None

    def __init__(
        self,
        message: str,
        *,
        response: httpx.Response,
        body: object | None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, response.request, body=body)
        self.response = response
        self.status_code = status_code if status_code is not None else response.status_code
        self.request_id = _request_id(response)
        detail = _envelope_detail(body)
        self.type = detail.get("type")
        self.param = detail.get("param")
        self.code = detail.get("code")


class BadRequestError(APIStatusError):
    """400: the server rejected the request body or parameters."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing, unknown or revoked."""


class PermissionDeniedError(APIStatusError):
    """403: the key is valid but its role may not do this."""


class NotFoundError(APIStatusError):
    """404: no such job for this key (another key's job looks exactly the same)."""


class ConflictError(APIStatusError):
    """409: the request conflicts with the server's state."""


class RequestTooLargeError(APIStatusError):
    """413: the body is over the server's size limit; send fewer or smaller requests."""


class UnprocessableEntityError(APIStatusError):
    """422: well-formed but refused; an ``Idempotency-Key`` reused for a different request."""


class RateLimitError(APIStatusError):
    """429: the server asks us to slow down."""


class InternalServerError(APIStatusError):
    """5xx: the server failed; retried automatically before this is raised."""


class BulkSubmitError(OpenBeepBoopError):
    """A bulk submit failed after some of its chunks were accepted.

    ``jobs`` are the jobs the server did create (in request order, the first
    ``len(jobs)`` requests); the failure itself is ``__cause__``. Keep the ids:
    those jobs run whatever happens to the rest.
    """

    jobs: list[Job]

    def __init__(self, message: str, jobs: Sequence[Job]) -> None:
        super().__init__(message)
        self.jobs = list(jobs)


class JobError(OpenBeepBoopError):
    """A job did not yield a result; ``job_id`` says which."""

    job_id: str

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobFailedError(JobError):
    """The job ended ``FAILED``; ``error_message``/``error_type`` say why, ``entry`` is all."""

    entry: PollEntry
    error_message: str
    error_type: str

    def __init__(self, entry: PollEntry) -> None:
        self.entry = entry
        self.error_message = entry.error.message if entry.error else "no error was reported"
        self.error_type = entry.error.type if entry.error else "unknown_error"
        super().__init__(
            f"job {entry.id} failed ({self.error_type}): {self.error_message}", entry.id
        )


class JobCancelledError(JobError):
    """The job ended ``CANCELLED``: it will never have a result."""

    entry: PollEntry

    def __init__(self, entry: PollEntry) -> None:
        self.entry = entry
        super().__init__(f"job {entry.id} was cancelled", entry.id)


class JobTimeoutError(JobError, TimeoutError):
    """A wait ran out before the job(s) finished; they stay on the server, unharmed.

    ``pending`` lists the ids still unfinished and ``entries`` the latest view of
    every id waited for (in the order asked), so nothing learned is lost. The
    message says where the unfinished jobs stand (a ``QUEUED`` job is not
    running anywhere yet; a ``PROCESSING`` one is).
    """

    pending: list[str]
    entries: list[PollEntry]

    def __init__(
        self, timeout: float, pending: Sequence[str], entries: Sequence[PollEntry] = ()
    ) -> None:
        self.pending = list(pending)
        self.entries = list(entries)
        self.timeout = timeout
        super().__init__(
            f"{self.standing()} after waiting {timeout:g}s; "
            f"{'it stays' if len(self.pending) == 1 else 'they stay'} on the server",
            self.pending[0] if self.pending else "",
        )

    def statuses(self) -> dict[str, int]:
        """How many unfinished jobs are in each status, as last seen (``?``: never seen)."""
        latest = {entry.id: entry.status for entry in self.entries}
        counts: dict[str, int] = {}
        for job_id in self.pending:
            status = latest.get(job_id, "?")
            counts[status] = counts.get(status, 0) + 1
        return dict(sorted(counts.items()))

    def standing(self) -> str:
        """``job job-1 is still QUEUED`` or ``3 jobs are not finished (2 QUEUED, 1 PROCESSING)``."""
        statuses = self.statuses()
        if len(self.pending) == 1:
            status = next(iter(statuses))
            still = "not finished" if status == "?" else f"still {status}"
            return f"job {self.pending[0]} is {still}"
        where = ", ".join(f"{count} {status}" for status, count in statuses.items())
        return f"{len(self.pending)} jobs are not finished ({where})"


#: Status code → error class; 5xx is handled apart.
STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The error class for one HTTP status."""
    if status_code >= 500:
        return InternalServerError
    return STATUS_ERRORS.get(status_code, APIStatusError)


def _origin(request: httpx.Request) -> str:
    url = request.url
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


def _request_id(response: httpx.Response) -> str | None:
    for name in REQUEST_ID_HEADERS:
        value = response.headers.get(name)
        if value:
            return str(value)
    return None


def _envelope_detail(body: object | None) -> dict[str, str | None]:
    """``type``/``param``/``code`` from an OpenAI error envelope, if the body is one."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return {
                key: (str(error[key]) if error.get(key) is not None else None)
                for key in ("type", "param", "code")
            }
    return {}
