"""``client.chat.completions``: submit chat completion jobs, one or many.

Every submit carries an ``Idempotency-Key`` header, generated per call (or per
bulk chunk) and kept the same across that call's retries, so a retry after a
lost answer returns the job the server already made instead of a second one.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from openbeepboop_schemas import (
    BULK_SUBMIT_PATH,
    CHAT_COMPLETIONS_PATH,
    MAX_BULK_SUBMIT,
    BulkSubmitResponse,
    ChatCompletionRequest,
    ChatMessage,
    JobWarning,
)
from openbeepboop_schemas import Job as JobModel

from openbeepboop._base_client import RequestOptions
from openbeepboop._chat_request import build_chat_request
from openbeepboop._constants import (
    IDEMPOTENCY_HEADER,
    MAX_BULK_BODY_BYTES,
    MAX_BULK_IDEMPOTENCY_KEY_LENGTH,
    MAX_IDEMPOTENCY_KEY_LENGTH,
)
from openbeepboop._exceptions import (
    APIResponseValidationError,
    BulkSubmitError,
    InvalidRequestError,
    OpenBeepBoopError,
)
from openbeepboop._jobs import AsyncJob, Job
from openbeepboop._submit_warnings import warn_about, warnings_for

if TYPE_CHECKING:
    from openbeepboop._client import AsyncClient, Client

#: A message as a dict (the OpenAI way) or as the schemas' model.
Message: TypeAlias = Mapping[str, object] | ChatMessage
#: What rides along with each payload through :func:`bulk_chunks`.
T = TypeVar("T")


#: What an Idempotency-Key may hold: printable ASCII without spaces, a subset of
#: what the server takes that an HTTP header carries as is and a shell copies.
_KEY_CHARACTERS = re.compile(r"[!-~]+")


def check_idempotency_key(key: str, *, bulk: bool = False) -> str:
    """``key`` if the server will take it as an Idempotency-Key; else InvalidRequestError.

    1 to 255 printable ASCII characters without spaces (240 for a bulk submit,
    whose chunks add ``-N``).
    """
    longest = MAX_BULK_IDEMPOTENCY_KEY_LENGTH if bulk else MAX_IDEMPOTENCY_KEY_LENGTH
    if _KEY_CHARACTERS.fullmatch(key) and len(key) <= longest:
        return key
    if not key or len(key) > longest:
        got = "an empty one" if not key else f"one of {len(key)} characters"
    else:
        bad = next(char for char in key if not _KEY_CHARACTERS.fullmatch(char))
        got = "one with a space" if bad == " " else f"one holding {bad!r}"
    raise InvalidRequestError(
        f"an idempotency key is 1 to {longest} printable ASCII characters without "
        f"spaces (got {got})"
    )


def new_idempotency_key() -> str:
    """A fresh Idempotency-Key (a uuid4), for one call and its retries."""
    return str(uuid.uuid4())


def _parse_job(body: object) -> JobModel:
    return JobModel.model_validate(body)


def _parse_bulk(body: object) -> BulkSubmitResponse:
    return BulkSubmitResponse.model_validate(body)


def _submit_options(request: ChatCompletionRequest, idempotency_key: str | None) -> RequestOptions:
    return RequestOptions(
        "POST",
        CHAT_COMPLETIONS_PATH,
        json=request.to_payload(),
        headers={IDEMPOTENCY_HEADER: idempotency_key or new_idempotency_key()},
    )


def _single_request(
    model: str | None,
    messages: Sequence[Message],
    params: Mapping[str, object],
    default: str | None,
) -> ChatCompletionRequest:
    return build_chat_request({**params, "model": model, "messages": messages}, default)


def build_bulk_requests(
    requests: Iterable[Mapping[str, object]],
    default_model: str | None,
    priority: int | None = None,
) -> list[ChatCompletionRequest]:
    """Validate every request before anything is sent; the error names the index.

    ``priority``, when given, is the priority of every request without its own.
    """
    built: list[ChatCompletionRequest] = []
    for index, params in enumerate(requests):
        if priority is not None and params.get("priority") is None:
            params = {**params, "priority": priority}
        try:
            built.append(build_chat_request(params, default_model))
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"request {index}: {exc}") from None
    return built


def bulk_chunks(
    items: Iterable[tuple[T, dict[str, object]]],
) -> Iterator[list[tuple[T, dict[str, object]]]]:
    """``(tag, payload)`` pairs in chunks of at most MAX_BULK_SUBMIT and ~MAX_BULK_BODY_BYTES.

    Lazy: ``items`` is read only as far as the chunk being made, so a caller
    reading them from a file holds one chunk at a time. The tag rides along
    (a batch line's ``custom_id``) to pair each payload with its job.
    """
    current: list[tuple[T, dict[str, object]]] = []
    size = 0
    for tag, payload in items:
        payload_size = len(json.dumps(payload, separators=(",", ":"))) + 1
        if current and (
            len(current) >= MAX_BULK_SUBMIT or size + payload_size > MAX_BULK_BODY_BYTES
        ):
            yield current
            current, size = [], 0
        current.append((tag, payload))
        size += payload_size
    if current:
        yield current


def chunk_key(idempotency_key: str | None, index: int) -> str:
    """The Idempotency-Key of bulk chunk ``index`` (counted from 0).

    ``KEY-<n>`` when the caller gave a key (so re-running the same call later
    is safe too), else a fresh uuid4.
    """
    return f"{idempotency_key}-{index}" if idempotency_key else new_idempotency_key()


def _bulk_options(payloads: Sequence[dict[str, object]], idempotency_key: str) -> RequestOptions:
    return RequestOptions(
        "POST",
        BULK_SUBMIT_PATH,
        json={"requests": list(payloads)},
        headers={IDEMPOTENCY_HEADER: idempotency_key},
    )


def submit_bulk_chunk(
    client: Client, payloads: Sequence[dict[str, object]], idempotency_key: str
) -> list[Job]:
    """Submit one chunk of validated payloads (see :func:`bulk_chunks`); its jobs, in order.

    It warns about nothing: whoever submits the chunks says each warning once.
    """
    options = _bulk_options(payloads, idempotency_key)
    answer = client.request(options, _parse_bulk)
    return [Job(item, client.jobs, warned) for item, warned in _check_bulk_answer(options, answer)]


def _check_bulk_answer(
    options: RequestOptions, answer: BulkSubmitResponse
) -> list[tuple[JobModel, list[JobWarning]]]:
    """The jobs of one chunk's answer, each with the warnings that concern it."""
    sent = len(options.json["requests"])  # type: ignore[index]
    if len(answer.data) != sent:
        raise APIResponseValidationError(
            f"bulk submit of {sent} requests answered {len(answer.data)} jobs"
        )
    return [(job, warnings_for(job.model, answer.warnings)) for job in answer.data]


def _warn_bulk(jobs: Sequence[Job | AsyncJob]) -> None:
    """Warn about a whole ``create_many`` once: one model can span many chunks."""
    warn_about(warning for job in jobs for warning in job.warnings)


def partial_failure(done: int, total: int, exc: OpenBeepBoopError) -> str:
    """What a bulk submit that stopped after ``done`` of ``total`` jobs says."""
    return f"bulk submit stopped after {done} of {total} jobs were created: {exc}"


class Completions:
    """``client.chat.completions`` of the synchronous client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        *,
        messages: Sequence[Message],
        model: str | None = None,
        idempotency_key: str | None = None,
        priority: int | None = None,
        **params: object,
    ) -> Job:
        """Submit one chat completion job; returns at once with its :class:`Job`.

        ``params`` are any other OpenAI chat completion fields (``temperature``,
        ``max_tokens``, ``response_format``, ...), passed through to the node.
        ``model`` falls back to ``default_model`` from the config. When the
        server warns (no node serves the model right now: the job waits until
        one does), ``job.warnings`` holds it and it is raised as a
        :class:`~openbeepboop.ModelNotServedWarning` (a ``UserWarning``).
        ``priority`` (native, not OpenAI): higher is claimed first, default 0,
        at most the key's ``max_priority`` (above it: PermissionDeniedError).
        ``idempotency_key`` (see :func:`check_idempotency_key`): the same key
        and request sent again, by any process, return this job, never a second.
        """
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        request = _single_request(
            model, messages, {**params, "priority": priority}, self._client.default_model
        )
        data = self._client.request(_submit_options(request, idempotency_key), _parse_job)
        warn_about(data.warnings)
        return Job(data, self._client.jobs)

    def create_many(
        self,
        requests: Iterable[Mapping[str, object]],
        *,
        idempotency_key: str | None = None,
        priority: int | None = None,
    ) -> list[Job]:
        """Submit many jobs through the bulk endpoint; their handles, in order.

        Each request is a mapping of OpenAI fields (``model``, ``messages``, ...).
        All are validated first; then they go in chunks of up to
        ``MAX_BULK_SUBMIT``, each one transaction on the server. If a later chunk
        fails, BulkSubmitError carries the jobs already created. Each job's
        ``warnings`` are those of its model; each distinct one is warned once.
        ``priority`` applies to every request that does not name its own.
        """
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key, bulk=True)
        built = build_bulk_requests(requests, self._client.default_model, priority)
        jobs: list[Job] = []
        chunks = bulk_chunks((None, request.to_payload()) for request in built)
        for index, chunk in enumerate(chunks):
            payloads = [payload for _, payload in chunk]
            try:
                made = submit_bulk_chunk(self._client, payloads, chunk_key(idempotency_key, index))
            except OpenBeepBoopError as exc:
                if not jobs:
                    raise
                _warn_bulk(jobs)
                message = partial_failure(len(jobs), len(built), exc)
                raise BulkSubmitError(message, [job.data for job in jobs]) from exc
            jobs.extend(made)
        _warn_bulk(jobs)
        return jobs


class AsyncCompletions:
    """``client.chat.completions`` of :class:`~openbeepboop.AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        messages: Sequence[Message],
        model: str | None = None,
        idempotency_key: str | None = None,
        priority: int | None = None,
        **params: object,
    ) -> AsyncJob:
        """Submit one chat completion job; see :meth:`Completions.create`."""
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        request = _single_request(
            model, messages, {**params, "priority": priority}, self._client.default_model
        )
        data = await self._client.request(_submit_options(request, idempotency_key), _parse_job)
        warn_about(data.warnings)
        return AsyncJob(data, self._client.jobs)

    async def create_many(
        self,
        requests: Iterable[Mapping[str, object]],
        *,
        idempotency_key: str | None = None,
        priority: int | None = None,
    ) -> list[AsyncJob]:
        """Submit many jobs through the bulk endpoint; see :meth:`Completions.create_many`."""
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key, bulk=True)
        built = build_bulk_requests(requests, self._client.default_model, priority)
        jobs: list[AsyncJob] = []
        chunks = bulk_chunks((None, request.to_payload()) for request in built)
        for index, chunk in enumerate(chunks):
            options = _bulk_options(
                [payload for _, payload in chunk], chunk_key(idempotency_key, index)
            )
            try:
                answer = await self._client.request(options, _parse_bulk)
                data = _check_bulk_answer(options, answer)
            except OpenBeepBoopError as exc:
                if not jobs:
                    raise
                _warn_bulk(jobs)
                message = partial_failure(len(jobs), len(built), exc)
                raise BulkSubmitError(message, [job.data for job in jobs]) from exc
            jobs.extend(AsyncJob(item, self._client.jobs, warned) for item, warned in data)
        _warn_bulk(jobs)
        return jobs


class Chat:
    """``client.chat``: holds ``completions``, as in the OpenAI SDK."""

    def __init__(self, client: Client) -> None:
        self.completions = Completions(client)


class AsyncChat:
    """``client.chat`` of :class:`~openbeepboop.AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self.completions = AsyncCompletions(client)
