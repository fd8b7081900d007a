"""Every error the node raises on purpose, under one base class.

::

    OpenBeepBoopNodeError
    ├── ConfigError             node_config.toml is missing, unreadable or invalid
    ├── ServerUnavailableError  the queue server cannot be reached now (retry later)
    ├── KeyRejectedError        the server answered 401/403: retrying will not help
    ├── ServerRequestError      the server refused a request as invalid (other 4xx)
    │   └── NotAQueueServerError   server_url answers, but not as an OpenBeepBoop server
    ├── SpoolError              the local result spool cannot be opened or written
    ├── InferenceError          the LLM call failed; carries the wire NodeError
    └── BackendUnreachableError the model's own backend could not be connected to

The command line turns each into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

from openbeepboop_schemas import NodeError


class OpenBeepBoopNodeError(Exception):
    """Base class of every error the node raises on purpose."""


class ConfigError(OpenBeepBoopNodeError):
    """The node's configuration is missing or invalid; the message names the field."""


class ServerUnavailableError(OpenBeepBoopNodeError):
    """The queue server did not answer usefully (connection error, timeout, 429, 5xx).

    ``retry_after`` is the server's ``Retry-After`` hint in seconds, when it gave one;
    ``timed_out`` says the server took the call and did not answer it in time
    (it may still be doing the work: a busy server, not a gone one).
    """

    def __init__(
        self, message: str, retry_after: float | None = None, *, timed_out: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.timed_out = timed_out


class KeyRejectedError(OpenBeepBoopNodeError):
    """The queue server refused the node's API key (401) or its role (403)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class ServerRequestError(OpenBeepBoopNodeError):
    """The queue server rejected a request as invalid (4xx other than 401/403/429).

    ``detail`` is the server's own message (from its error envelope).
    """

    def __init__(self, message: str, status_code: int, detail: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class NotAQueueServerError(ServerRequestError):
    """A queue path answered 404 (or 405, 501) without the server's error envelope.

    An OpenBeepBoop server answers every node path, and its errors always
    carry the envelope; a bare 404 comes from something else at that URL (an
    LLM backend, another web server, a proxy given the wrong path prefix).
    """


class SpoolError(OpenBeepBoopNodeError):
    """The local result spool cannot be opened or written."""


class InferenceError(OpenBeepBoopNodeError):
    """An LLM call failed; ``error`` is what the node reports to the queue."""

    def __init__(self, error: NodeError) -> None:
        super().__init__(error.message)
        self.error = error


class BackendUnreachableError(OpenBeepBoopNodeError):
    """No connection to a model's backend (refused, DNS, connect timeout): no answer at all.

    Not the job's fault, so it costs the job nothing: its lease is handed back
    and the model is paused until the backend answers again
    (:mod:`~openbeepboop_node.backend_health`).
    """
