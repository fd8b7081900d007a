"""``Job`` and ``AsyncJob``: the handle ``create`` returns for one submitted job.

A handle holds what submit answered (``id``, ``status``, ``model``,
``created_at``, ``warnings``) and knows how to ask the server about its job again. ``status``
reads like an attribute and refreshes when called::

    job.status          # "QUEUED" - the last status this handle saw
    job.status()        # asks the server; the handle now holds the new status
    job.get(wait=True)  # the ChatCompletion, or JobFailedError / JobCancelledError
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, overload

from openbeepboop_schemas import ChatCompletion, JobStatus, JobWarning, PollEntry
from openbeepboop_schemas import Job as JobModel

from openbeepboop._exceptions import APIResponseValidationError, JobCancelledError, JobFailedError

if TYPE_CHECKING:
    from openbeepboop._resources.jobs import AsyncJobs, Jobs


class JobStatusView(str):
    """A job's last known status (a plain string); call it to ask the server again."""

    _refresh: Callable[[], JobStatusView]

    def __new__(cls, value: str, refresh: Callable[[], JobStatusView]) -> JobStatusView:
        """A status string bound to the handle that can refresh it."""
        self = super().__new__(cls, value)
        self._refresh = refresh
        return self

    def __call__(self) -> JobStatusView:
        """Ask the server for the job's current status."""
        return self._refresh()


class AsyncJobStatusView(str):
    """A job's last known status (a plain string); ``await`` a call to refresh it."""

    _refresh: Callable[[], Awaitable[AsyncJobStatusView]]

    def __new__(
        cls, value: str, refresh: Callable[[], Awaitable[AsyncJobStatusView]]
    ) -> AsyncJobStatusView:
        """A status string bound to the handle that can refresh it."""
        self = super().__new__(cls, value)
        self._refresh = refresh
        return self

    def __call__(self) -> Awaitable[AsyncJobStatusView]:
        """Ask the server for the job's current status."""
        return self._refresh()


def completion_of(entry: PollEntry) -> ChatCompletion | None:
    """The result of a job as polled: its completion, an error, or None while unfinished."""
    if entry.status == JobStatus.COMPLETED.value:
        if entry.result is None:
            raise APIResponseValidationError(f"job {entry.id} is COMPLETED but has no result")
        return entry.result
    if entry.status == JobStatus.FAILED.value:
        raise JobFailedError(entry)
    if entry.status == JobStatus.CANCELLED.value:
        raise JobCancelledError(entry)
    return None


class _JobHandle:
    """What both handles hold: the submit answer and the latest poll entry."""

    _data: JobModel
    _status: str
    entry: PollEntry | None

    def __init__(self, data: JobModel, warnings: list[JobWarning] | None = None) -> None:
        self._data = data
        self._status = data.status.value if isinstance(data.status, JobStatus) else str(data.status)
        self._warnings = list(data.warnings) if warnings is None else warnings
        self.entry = None

    @property
    def id(self) -> str:
        """The job id (``job-...``): keep it to collect the result later."""
        return self._data.id

    @property
    def model(self) -> str:
        """The model the job asked for."""
        return self._data.model

    @property
    def created_at(self) -> int:
        """When the server accepted the job (Unix seconds)."""
        return self._data.created_at

    @property
    def warnings(self) -> list[JobWarning]:
        """What the server warned about at submit (e.g. no node serves the model); often empty.

        For a job of a bulk submit: the answer's warnings that concern its model.
        """
        return self._warnings

    @property
    def data(self) -> JobModel:
        """The job exactly as submit answered it."""
        return self._data

    def to_dict(self) -> dict[str, object]:
        """The job as JSON-ready data, with its latest known status."""
        return {**self._data.model_dump(mode="json"), "status": self._status}

    def _remember(self, entry: PollEntry) -> None:
        self.entry = entry
        self._status = entry.status

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(id={self.id!r}, status={self._status!r}, model={self.model!r})"
        )


class Job(_JobHandle):
    """A submitted job, for the synchronous :class:`~openbeepboop.Client`."""

    def __init__(
        self, data: JobModel, jobs: Jobs, warnings: list[JobWarning] | None = None
    ) -> None:
        super().__init__(data, warnings)
        self._jobs = jobs

    @property
    def status(self) -> JobStatusView:
        """The last status seen (``"QUEUED"``, ...); ``job.status()`` refreshes it."""
        return JobStatusView(self._status, self._refresh_status)

    def _refresh_status(self) -> JobStatusView:
        self.refresh()
        return self.status

    def refresh(self) -> PollEntry:
        """Ask the server about this job now; returns the full poll entry."""
        entry = self._jobs.get(self.id)
        self._remember(entry)
        return entry

    @overload
    def get(self, wait: Literal[True] = True, timeout: float | None = None) -> ChatCompletion: ...
    @overload
    def get(self, wait: bool, timeout: float | None = None) -> ChatCompletion | None: ...

    def get(self, wait: bool = True, timeout: float | None = None) -> ChatCompletion | None:
        """The job's ``ChatCompletion``.

        With ``wait`` (the default) block until the job finishes, up to
        ``timeout`` seconds (None: no limit; JobTimeoutError after). Without it,
        ask once and return None if the job is not finished. Raises
        JobFailedError or JobCancelledError if the job ended without a result,
        NotFoundError if the server does not know it.
        """
        entry = self._jobs.wait_one(self.id, timeout=timeout) if wait else self._jobs.get(self.id)
        self._remember(entry)
        return completion_of(entry)

    def wait(self, timeout: float | None = None) -> PollEntry:
        """Block until the job is finished (any terminal status); its poll entry."""
        entry = self._jobs.wait_one(self.id, timeout=timeout)
        self._remember(entry)
        return entry

    def cancel(self) -> PollEntry:
        """Cancel the job (no-op if already finished); its entry afterwards."""
        entry = self._jobs.cancel(self.id)
        self._remember(entry)
        return entry


class AsyncJob(_JobHandle):
    """A submitted job, for :class:`~openbeepboop.AsyncClient`: every call is awaited."""

    def __init__(
        self, data: JobModel, jobs: AsyncJobs, warnings: list[JobWarning] | None = None
    ) -> None:
        super().__init__(data, warnings)
        self._jobs = jobs

    @property
    def status(self) -> AsyncJobStatusView:
        """The last status seen; ``await job.status()`` refreshes it."""
        return AsyncJobStatusView(self._status, self._refresh_status)

    async def _refresh_status(self) -> AsyncJobStatusView:
        await self.refresh()
        return self.status

    async def refresh(self) -> PollEntry:
        """Ask the server about this job now; returns the full poll entry."""
        entry = await self._jobs.get(self.id)
        self._remember(entry)
        return entry

    @overload
    async def get(
        self, wait: Literal[True] = True, timeout: float | None = None
    ) -> ChatCompletion: ...
    @overload
    async def get(self, wait: bool, timeout: float | None = None) -> ChatCompletion | None: ...

    async def get(self, wait: bool = True, timeout: float | None = None) -> ChatCompletion | None:
        """The job's ``ChatCompletion``; see :meth:`Job.get`."""
        if wait:
            entry = await self._jobs.wait_one(self.id, timeout=timeout)
        else:
            entry = await self._jobs.get(self.id)
        self._remember(entry)
        return completion_of(entry)

    async def wait(self, timeout: float | None = None) -> PollEntry:
        """Wait until the job is finished (any terminal status); its poll entry."""
        entry = await self._jobs.wait_one(self.id, timeout=timeout)
        self._remember(entry)
        return entry

    async def cancel(self) -> PollEntry:
        """Cancel the job (no-op if already finished); its entry afterwards."""
        entry = await self._jobs.cancel(self.id)
        self._remember(entry)
        return entry
