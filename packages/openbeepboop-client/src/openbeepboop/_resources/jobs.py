"""``client.jobs``: look at, poll, wait for, list and cancel jobs.

Each method builds one request and names the model its answer parses into;
``wait`` drives the long-poll plan of :mod:`openbeepboop._waiting`.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import pydantic
from openbeepboop_schemas import (
    JOBS_PATH,
    MAX_POLL_IDS,
    MAX_WAIT_SECONDS,
    NOT_FOUND,
    POLL_PATH,
    ChatCompletion,
    JobList,
    JobStatus,
    PollEntry,
    PollRequest,
    job_cancel_path,
    job_path,
)
from pydantic import TypeAdapter

from openbeepboop import _constants
from openbeepboop._base_client import RequestOptions, long_poll_timeout
from openbeepboop._chat_request import describe_validation_error
from openbeepboop._exceptions import (
    APIResponseValidationError,
    InvalidRequestError,
    OpenBeepBoopError,
)
from openbeepboop._jobs import completion_of
from openbeepboop._progress import NoProgress, Progress, open_progress
from openbeepboop._waiting import Outage, WaitPlan

if TYPE_CHECKING:
    from openbeepboop._client import AsyncClient, Client

_POLL_ANSWER: TypeAdapter[list[PollEntry]] = TypeAdapter(list[PollEntry])


def _stored_result(entry: object) -> object:
    """``entry`` with a result this version cannot validate taken as stored.

    The server serves a result an older version accepted under looser rules
    (``choices: []`` before a completion needed one) as it was stored rather
    than failing every poll naming that job; the client reads it the same
    way (unvalidated, as the server's ``model_construct``) instead of
    refusing the whole answer. Anything else in the entry is still checked.
    """
    if not isinstance(entry, dict) or not isinstance(entry.get("result"), dict):
        return entry
    try:
        ChatCompletion.model_validate(entry["result"])
    except pydantic.ValidationError:
        return {**entry, "result": ChatCompletion.model_construct(**entry["result"])}
    return entry


def _parse_entry(body: object) -> PollEntry:
    return PollEntry.model_validate(_stored_result(body))


def _parse_job_list(body: object) -> JobList:
    if isinstance(body, dict) and isinstance(body.get("data"), builtins.list):
        body = {**body, "data": [_stored_result(entry) for entry in body["data"]]}
    return JobList.model_validate(body)


def _parse_poll(body: object) -> list[PollEntry]:
    if isinstance(body, builtins.list):
        body = [_stored_result(entry) for entry in body]
    return _POLL_ANSWER.validate_python(body)


def _get_options(job_id: str) -> RequestOptions:
    # An id is user input (CLI arguments, files): job_path quotes it into one segment.
    return RequestOptions("GET", job_path(job_id))


def _cancel_options(job_id: str) -> RequestOptions:
    return RequestOptions("POST", job_cancel_path(job_id))


def _list_options(
    status: JobStatus | str | None, limit: int | None, after: str | None
) -> RequestOptions:
    params: dict[str, str | int] = {}
    if status is not None:
        params["status"] = status.value if isinstance(status, JobStatus) else status
    if limit is not None:
        params["limit"] = limit
    if after is not None:
        params["after"] = after
    return RequestOptions("GET", JOBS_PATH, params=params)


def _poll_body(ids: builtins.list[str], wait: float | None) -> dict[str, object]:
    try:
        request = PollRequest(ids=ids, wait=wait)
    except pydantic.ValidationError as exc:
        raise InvalidRequestError(describe_validation_error(exc)) from None
    return request.model_dump(mode="json", exclude_none=True)


def _chunks(ids: Sequence[str]) -> builtins.list[builtins.list[str]]:
    return [builtins.list(ids[i : i + MAX_POLL_IDS]) for i in range(0, len(ids), MAX_POLL_IDS)]


def _reporter(progress: bool | Progress, total: int) -> Progress:
    """What a wait reports to: a bar (True), nothing (False), or the caller's own."""
    if isinstance(progress, bool):
        return open_progress(progress, total)
    return progress


def _longest_wait(progress: bool | Progress) -> float:
    """Long-poll per round: short while someone watches, so what they see stays fresh."""
    watched = progress if isinstance(progress, bool) else not isinstance(progress, NoProgress)
    return _constants.WATCHED_WAIT_ROUND_SECONDS if watched else MAX_WAIT_SECONDS


def _check_poll_answer(ids: Sequence[str], entries: builtins.list[PollEntry]) -> None:
    if len(entries) != len(ids):
        raise APIResponseValidationError(f"poll for {len(ids)} ids answered {len(entries)} entries")


class Jobs:
    """Jobs of the synchronous client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, job_id: str) -> PollEntry:
        """One job as it is now (``GET /v1/jobs/{id}``); NotFoundError if unknown."""
        return self._client.request(_get_options(job_id), _parse_entry)

    def poll(self, ids: Sequence[str], *, wait: float | None = None) -> builtins.list[PollEntry]:
        """One entry per id, in order; unknown ids come back with status ``NOT_FOUND``.

        More than :data:`MAX_POLL_IDS` ids are split over several requests. With
        ``wait`` the server holds the answer until one of the (first chunk's)
        unfinished jobs finishes, or ``wait`` seconds pass.
        """
        entries: builtins.list[PollEntry] = []
        for index, chunk in enumerate(_chunks(ids)):
            entries.extend(self._poll_chunk(chunk, wait if index == 0 else None))
        return entries

    def _poll_chunk(self, ids: builtins.list[str], wait: float | None) -> builtins.list[PollEntry]:
        body = _poll_body(ids, wait)
        timeout = long_poll_timeout(self._client.timeout, wait)
        entries = self._client.request(
            RequestOptions("POST", POLL_PATH, json=body, timeout=timeout), _parse_poll
        )
        _check_poll_answer(ids, entries)
        return entries

    def wait(
        self,
        ids: Sequence[str],
        *,
        timeout: float | None = None,
        progress: bool | Progress = False,
        on_final: Callable[[PollEntry], None] | None = None,
    ) -> builtins.list[PollEntry]:
        """Block until every job is finished; their entries, in the order of ``ids``.

        Uses the server's long-poll, never a tight loop, so it suits thousands
        of ids. ``timeout`` (seconds, None: no limit) raises JobTimeoutError,
        which carries the entries seen so far. ``progress=True`` draws a bar on
        stderr (finished by status, and how many are queued and running); the
        command line passes its own status line instead.

        ``on_final`` is called with each entry as its job finishes, which is
        then not kept: the wait returns (and JobTimeoutError carries) only the
        entries not handed over, so collecting answers too many to hold at once
        takes the memory of one poll's answer (``results --wait`` spools them).
        """
        plan = WaitPlan(ids, timeout, longest_wait=_longest_wait(progress), on_final=on_final)
        outage = Outage(plan.deadline)
        bar = _reporter(progress, plan.total)
        try:
            while not plan.done:
                try:
                    for call in plan.next_round():
                        finished = plan.record(call.ids, self._poll_chunk(call.ids, call.wait))
                        bar.advance(finished, plan.tally)
                except OpenBeepBoopError as exc:
                    # A server restart mid-wait is ridden out: docs/client.md,
                    # "A server restart does not end a wait".
                    self._client._sleep(outage.ride_out(exc, bar.unreachable))
                    continue
                outage.over()
                bar.pending(plan.pending_entries())
                pause = plan.pause()
                if pause:
                    self._client._sleep(pause)
        finally:
            bar.close()
        return plan.entries()

    def wait_one(self, job_id: str, *, timeout: float | None = None) -> PollEntry:
        """Block until one job is finished; NotFoundError if the server does not know it."""
        entry = self.wait([job_id], timeout=timeout)[0]
        if entry.status == NOT_FOUND:
            # Ask the job's own endpoint, whose 404 is the real NotFoundError.
            return self.get(job_id)
        return entry

    def result(
        self, job_id: str, *, wait: bool = True, timeout: float | None = None
    ) -> ChatCompletion | None:
        """A job's ``ChatCompletion`` by id; the same rules as ``Job.get``."""
        entry = self.wait_one(job_id, timeout=timeout) if wait else self.get(job_id)
        return completion_of(entry)

    def list(
        self,
        *,
        status: JobStatus | str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> JobList:
        """One page of your jobs, newest first; pass ``next_after`` as ``after`` for more."""
        return self._client.request(_list_options(status, limit, after), _parse_job_list)

    def cancel(self, job_id: str) -> PollEntry:
        """Cancel a job; its entry afterwards. Finished jobs stay as they were."""
        return self._client.request(_cancel_options(job_id), _parse_entry)


class AsyncJobs:
    """Jobs of :class:`~openbeepboop.AsyncClient`; the same methods, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def get(self, job_id: str) -> PollEntry:
        """One job as it is now; NotFoundError if unknown."""
        return await self._client.request(_get_options(job_id), _parse_entry)

    async def poll(
        self, ids: Sequence[str], *, wait: float | None = None
    ) -> builtins.list[PollEntry]:
        """One entry per id, in order; see :meth:`Jobs.poll`."""
        entries: builtins.list[PollEntry] = []
        for index, chunk in enumerate(_chunks(ids)):
            entries.extend(await self._poll_chunk(chunk, wait if index == 0 else None))
        return entries

    async def _poll_chunk(
        self, ids: builtins.list[str], wait: float | None
    ) -> builtins.list[PollEntry]:
        body = _poll_body(ids, wait)
        timeout = long_poll_timeout(self._client.timeout, wait)
        entries = await self._client.request(
            RequestOptions("POST", POLL_PATH, json=body, timeout=timeout), _parse_poll
        )
        _check_poll_answer(ids, entries)
        return entries

    async def wait(
        self,
        ids: Sequence[str],
        *,
        timeout: float | None = None,
        progress: bool | Progress = False,
        on_final: Callable[[PollEntry], None] | None = None,
    ) -> builtins.list[PollEntry]:
        """Wait until every job is finished; see :meth:`Jobs.wait`."""
        plan = WaitPlan(ids, timeout, longest_wait=_longest_wait(progress), on_final=on_final)
        outage = Outage(plan.deadline)
        bar = _reporter(progress, plan.total)
        try:
            while not plan.done:
                try:
                    for call in plan.next_round():
                        entries = await self._poll_chunk(call.ids, call.wait)
                        bar.advance(plan.record(call.ids, entries), plan.tally)
                except OpenBeepBoopError as exc:
                    await self._client._sleep(outage.ride_out(exc, bar.unreachable))
                    continue
                outage.over()
                bar.pending(plan.pending_entries())
                pause = plan.pause()
                if pause:
                    await self._client._sleep(pause)
        finally:
            bar.close()
        return plan.entries()

    async def wait_one(self, job_id: str, *, timeout: float | None = None) -> PollEntry:
        """Wait until one job is finished; NotFoundError if the server does not know it."""
        entry = (await self.wait([job_id], timeout=timeout))[0]
        if entry.status == NOT_FOUND:
            return await self.get(job_id)
        return entry

    async def result(
        self, job_id: str, *, wait: bool = True, timeout: float | None = None
    ) -> ChatCompletion | None:
        """A job's ``ChatCompletion`` by id; the same rules as ``Job.get``."""
        entry = await self.wait_one(job_id, timeout=timeout) if wait else await self.get(job_id)
        return completion_of(entry)

    async def list(
        self,
        *,
        status: JobStatus | str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> JobList:
        """One page of your jobs, newest first."""
        return await self._client.request(_list_options(status, limit, after), _parse_job_list)

    async def cancel(self, job_id: str) -> PollEntry:
        """Cancel a job; its entry afterwards."""
        return await self._client.request(_cancel_options(job_id), _parse_entry)
