"""What users send and read about jobs: submit, bulk submit, poll, list, models.

One view of a job, :class:`PollEntry`, answers poll, ``GET /v1/jobs/{id}`` and
``GET /v1/jobs``, so a client parses all three the same way. A submit that
was queued but may not run soon says why in :class:`JobWarning` entries (and
in :data:`WARNING_HEADER` headers), never by refusing the job.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from openbeepboop_schemas._base import JsonFloat, StrictBody, TolerantBody
from openbeepboop_schemas.chat import ChatCompletion, ChatCompletionRequest
from openbeepboop_schemas.limits import MAX_BULK_SUBMIT, MAX_POLL_IDS, MAX_WAIT_SECONDS
from openbeepboop_schemas.status import JobStatus

JobId = str
WaitSeconds = Annotated[JsonFloat, Field(ge=0, le=MAX_WAIT_SECONDS)]

#: Response header repeating each warning's ``message`` of a submit, one header per
#: warning, for callers that read headers but not bodies (proxies, ``curl -i``).
WARNING_HEADER = "OpenBeepBoop-Warning"
#: Warning code: no node that serves the job's model has been seen recently.
MODEL_NOT_SERVED = "model_not_served"


class JobWarning(TolerantBody):
    """Something the submitter should know about a job that was nevertheless queued.

    ``code`` is machine-readable (:data:`MODEL_NOT_SERVED`; clients should
    tolerate codes they do not know), ``message`` one human line, ``model``
    the model it is about, if any.
    """

    code: str
    message: str
    model: str | None = None


class Job(TolerantBody):
    """A job as returned by submit (``202``): enough to come back for it later.

    ``warnings`` is empty unless the job may wait long (no node serves its
    model right now); it is not stored, only part of the submit's answer.
    """

    id: JobId
    object: Literal["job"] = "job"
    status: JobStatus
    model: str
    created_at: int
    warnings: list[JobWarning] = Field(default_factory=list)


class BulkSubmitRequest(StrictBody):
    """Many chat completion requests submitted in one call and one transaction."""

    requests: list[ChatCompletionRequest] = Field(min_length=1, max_length=MAX_BULK_SUBMIT)


class BulkSubmitResponse(TolerantBody):
    """The jobs created by a bulk submit, in the order of the requests.

    ``warnings`` holds one entry per model that needs one (not one per job:
    a 5,000-line batch for one unserved model gets one warning, naming the
    model); the jobs in ``data`` carry none of their own.
    """

    object: Literal["list"] = "list"
    data: list[Job]
    warnings: list[JobWarning] = Field(default_factory=list)


class JobError(TolerantBody):
    """Why a job failed: the node's (or the server's) message and a category."""

    message: str
    type: str


class PollRequest(StrictBody):
    """Ask about up to :data:`MAX_POLL_IDS` jobs.

    With ``wait``, the server holds the answer until at least one listed job that
    was not yet terminal becomes terminal (or all already are), or ``wait``
    seconds pass, whichever is first.
    """

    ids: list[JobId] = Field(min_length=1, max_length=MAX_POLL_IDS)
    wait: WaitSeconds | None = None


class PollEntry(TolerantBody):
    """Everything a caller may know about one job.

    ``status`` is a :class:`JobStatus` string, or ``NOT_FOUND`` for an id the
    caller may not see. ``completed`` is true only for ``COMPLETED``.
    Timestamps are Unix seconds. ``result_omitted`` is true when a poll left
    this entry's ``result`` out to stay within the server's answer size (the
    entries before it filled it): poll that job again, alone or with fewer
    others, or ``GET`` it. ``node_id`` names the node working on the job, only
    while it is ``PROCESSING`` (absent otherwise), so a waiting user can see
    where it runs.
    """

    id: JobId
    object: Literal["job"] = "job"
    status: str
    completed: bool = False
    model: str | None = None
    result: ChatCompletion | None = None
    error: JobError | None = None
    attempts: int = 0
    created_at: int | None = None
    started_at: int | None = None
    completed_at: int | None = None
    result_omitted: bool = False
    node_id: str | None = None


class JobList(TolerantBody):
    """One page of the caller's jobs, newest first.

    Pass ``next_after`` as the ``after`` query parameter to get the next page.
    """

    object: Literal["list"] = "list"
    data: list[PollEntry]
    has_more: bool = False
    next_after: JobId | None = None


class ModelCard(TolerantBody):
    """A model some recently seen node serves.

    ``nodes`` counts the recently seen nodes that would be handed its jobs:
    those that declare it by name plus those that declare ``*``. (OpenAI SDK
    readers ignore the extra field.)
    """

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "openbeepboop"
    nodes: int = 0


class ModelList(TolerantBody):
    """``GET /v1/models`` in the OpenAI list shape.

    A node that declares ``*`` is no model and is not listed: it is counted
    in every card's ``nodes`` and in ``any_model_nodes``.
    """

    object: Literal["list"] = "list"
    data: list[ModelCard]
    any_model_nodes: int = 0
