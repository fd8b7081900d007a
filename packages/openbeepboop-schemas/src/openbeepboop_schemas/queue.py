"""The node protocol: fetch leases, deliver outcomes, heartbeat, watch leases.

A lease is the right to work on one job until ``lease_expires_at``; the
``lease_token`` proves it on every later call. Outcomes are a tagged union on
``kind`` so a node can deliver results, errors and releases in one request.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from openbeepboop_schemas._base import JsonBool, JsonFloat, JsonInt, StrictBody, TolerantBody
from openbeepboop_schemas.chat import ChatCompletion, ChatCompletionRequest
from openbeepboop_schemas.limits import (
    MAX_ERROR_MESSAGE_CHARS,
    MAX_FETCH_JOBS,
    MAX_HEARTBEAT_LEASES,
    MAX_NODE_MODELS,
    MAX_SUBMIT_OUTCOMES,
    MAX_WAIT_SECONDS,
)
from openbeepboop_schemas.printable import ModelName, NodeVersion

#: The model name a node declares to take jobs for any model.
ANY_MODEL = "*"

NodeId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")]


class FetchRequest(StrictBody):
    """Claim up to ``max_jobs`` queued jobs for ``models``, waiting up to ``wait`` s."""

    node_id: NodeId
    models: list[ModelName] = Field(min_length=1, max_length=MAX_NODE_MODELS)
    max_jobs: JsonInt = Field(default=1, ge=1, le=MAX_FETCH_JOBS)
    wait: JsonFloat = Field(default=0.0, ge=0, le=MAX_WAIT_SECONDS)
    version: NodeVersion | None = None
    #: Every model the node serves now, sent when it claims for fewer (a model
    #: at its own concurrency limit is left out of ``models`` but still served).
    serves: list[ModelName] | None = Field(default=None, max_length=MAX_NODE_MODELS)

    @property
    def declared_models(self) -> list[str]:
        """What the node registry records: ``serves`` if sent, else ``models``."""
        return self.models if self.serves is None else self.serves


class Lease(TolerantBody):
    """One claimed job: the request to run and the proof of the claim."""

    # As bounded as the LeaseRef and outcomes that name it later: a lease a
    # node could not hand back or deliver for is refused on arrival instead.
    job_id: str = Field(min_length=1, max_length=128)
    lease_token: str = Field(min_length=1, max_length=128)
    lease_expires_at: float
    lease_seconds: float
    attempt: int
    model: str
    request: ChatCompletionRequest


class LeaseRef(StrictBody):
    """Names a held lease."""

    job_id: str = Field(min_length=1, max_length=128)
    lease_token: str = Field(min_length=1, max_length=128)


#: Error ``type`` (and ``413`` envelope ``code``) for a result over the server's results
#: limit: a node that gets that ``413`` for a single result delivers an error outcome of
#: this type (``retryable: false``) instead, so the job fails visibly rather than re-running.
RESULT_TOO_LARGE = "result_too_large"


class NodeError(StrictBody):
    """A failed inference as the node saw it.

    ``retryable`` errors (timeouts, rate limits, 5xx, connection) send the job
    back to the queue with backoff; the rest fail it at once.
    """

    message: str = Field(max_length=MAX_ERROR_MESSAGE_CHARS)
    type: str = Field(default="inference_error", max_length=128)
    retryable: JsonBool
    status_code: JsonInt | None = None


def _kind_is_required(schema: dict[str, Any]) -> None:
    # ``kind`` has a default so Python callers need not spell it, but the
    # server dispatches on it: on the wire it is required.
    required = schema.setdefault("required", [])
    if "kind" not in required:
        required.append("kind")


class _TaggedOutcome(LeaseRef):
    model_config = ConfigDict(json_schema_extra=_kind_is_required)


class ResultOutcome(_TaggedOutcome):
    """A finished job's completion."""

    kind: Literal["result"] = "result"
    result: ChatCompletion


class ErrorOutcome(_TaggedOutcome):
    """A job the node could not complete."""

    kind: Literal["error"] = "error"
    error: NodeError


class ReleaseOutcome(_TaggedOutcome):
    """Hand a lease back unworked (shutdown): the job requeues at once, no attempt counted."""

    kind: Literal["release"] = "release"


Outcome = Annotated[ResultOutcome | ErrorOutcome | ReleaseOutcome, Field(discriminator="kind")]


class SubmitRequest(StrictBody):
    """Deliver one or many outcomes for held leases."""

    node_id: NodeId
    outcomes: list[Outcome] = Field(min_length=1, max_length=MAX_SUBMIT_OUTCOMES)


AckStatus = Literal["accepted", "duplicate", "stale", "rejected"]
"""What the server did with an outcome.

``accepted``: recorded. ``duplicate``: the same lease already delivered.
``stale``: the job is terminal or the lease was lost (late result; nothing
changed). ``rejected``: the caller never held this lease. A node may drop
its copy in every case: none of them gets better by resending.
"""


class SubmitAck(TolerantBody):
    """The server's answer for one outcome."""

    job_id: str
    ack: AckStatus
    status: str | None = None


class SubmitResponse(TolerantBody):
    """One ack per outcome, in order."""

    acks: list[SubmitAck]


class HeartbeatRequest(StrictBody):
    """Extend the leases a node holds; also refreshes its registry entry."""

    node_id: NodeId
    leases: list[LeaseRef] = Field(default_factory=list, max_length=MAX_HEARTBEAT_LEASES)
    models: list[ModelName] | None = Field(default=None, max_length=MAX_NODE_MODELS)
    version: NodeVersion | None = None

    @property
    def declared_models(self) -> list[str] | None:
        """What the node registry records: ``models`` (None keeps what it knew)."""
        return self.models


class HeartbeatResponse(TolerantBody):
    """Which leases were extended (to ``lease_expires_at``), lost, or cancelled.

    A node must abort work on ``lost`` and ``cancelled`` jobs: their results
    will be ignored.
    """

    lease_expires_at: float | None = None
    lease_seconds: float
    extended: list[str] = Field(default_factory=list)
    lost: list[str] = Field(default_factory=list)
    cancelled: list[str] = Field(default_factory=list)


class LeaseWatchRequest(StrictBody):
    """Wait up to ``wait`` s until one of ``leases`` is cancelled or lost.

    A node keeps one open while it holds leases, so that a cancel reaches a
    running job at once rather than at its next heartbeat. It extends nothing
    (the heartbeat does that).
    """

    node_id: NodeId
    leases: list[LeaseRef] = Field(min_length=1, max_length=MAX_HEARTBEAT_LEASES)
    wait: JsonFloat = Field(default=0.0, ge=0, le=MAX_WAIT_SECONDS)


class LeaseWatchResponse(TolerantBody):
    """Which of the watched leases were cancelled or lost; both empty when the wait ran out.

    As in :class:`HeartbeatResponse`, a node must abort work on them. A lease
    the node delivered itself (its outcome acknowledged or not) is in neither list.
    """

    cancelled: list[str] = Field(default_factory=list)
    lost: list[str] = Field(default_factory=list)
