"""Retries: which failures, how long between, and that a retried submit is one job."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest
import respx
from conftest import API_KEY, BASE_URL, entry_body, error_body, job_body
from openbeepboop import (
    APIConnectionError,
    APIError,
    AsyncClient,
    BadRequestError,
    Client,
    InternalServerError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    _constants,
    _retry,
)

MESSAGES = [{"role": "user", "content": "Hi"}]


class DropFirst:
    """Records every request; the first ``drops`` get a network error instead of an answer.

    That is a lost response as the client sees it: the server may well have
    done the work, so a retry must not do it twice.
    """

    def __init__(self, answer: httpx.Response, error: Exception, drops: int = 1) -> None:
        self.answer = answer
        self.error = error
        self.drops = drops
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) <= self.drops:
            raise self.error
        return self.answer

    def keys(self) -> list[str | None]:
        return [request.headers.get("Idempotency-Key") for request in self.requests]


@pytest.mark.parametrize(
    "error", [httpx.ConnectError("refused"), httpx.ReadError("connection reset")]
)
def test_submit_retry_reuses_the_idempotency_key(
    server: respx.MockRouter, client: Client, error: Exception
) -> None:
    side = DropFirst(httpx.Response(202, json=job_body("job-once")), error)
    server.post("/v1/chat/completions").mock(side_effect=side)
    job = client.chat.completions.create(model="llama3", messages=MESSAGES)
    assert job.id == "job-once"
    keys = side.keys()
    assert len(keys) == 2
    assert keys[0] and keys[0] == keys[1]


def test_bulk_submit_retry_reuses_the_idempotency_key(
    server: respx.MockRouter, client: Client
) -> None:
    answer = httpx.Response(
        202, json={"object": "list", "data": [job_body("job-a"), job_body("job-b")]}
    )
    side = DropFirst(answer, httpx.ReadError("reset"))
    server.post("/v1/chat/completions/bulk").mock(side_effect=side)
    jobs = client.chat.completions.create_many(
        [{"model": "llama3", "messages": MESSAGES}, {"model": "llama3", "messages": MESSAGES}]
    )
    assert [job.id for job in jobs] == ["job-a", "job-b"]
    keys = side.keys()
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]


async def test_async_submit_retry_reuses_the_idempotency_key(server: respx.MockRouter) -> None:
    side = DropFirst(httpx.Response(202, json=job_body("job-once")), httpx.ReadError("reset"))
    server.post("/v1/chat/completions").mock(side_effect=side)
    async with AsyncClient(base_url=BASE_URL, api_key=API_KEY) as client:
        job = await client.chat.completions.create(model="llama3", messages=MESSAGES)
    assert job.id == "job-once"
    keys = side.keys()
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]


async def test_async_bulk_retry_reuses_the_idempotency_key(server: respx.MockRouter) -> None:
    answer = httpx.Response(202, json={"object": "list", "data": [job_body("job-a")]})
    side = DropFirst(answer, httpx.ConnectError("refused"))
    server.post("/v1/chat/completions/bulk").mock(side_effect=side)
    async with AsyncClient(base_url=BASE_URL, api_key=API_KEY) as client:
        jobs = await client.chat.completions.create_many([{"model": "m", "messages": MESSAGES}])
    assert [job.id for job in jobs] == ["job-a"]
    keys = side.keys()
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]


def test_each_submit_call_gets_its_own_key(server: respx.MockRouter, client: Client) -> None:
    route = server.post("/v1/chat/completions").respond(202, json=job_body())
    client.chat.completions.create(model="llama3", messages=MESSAGES)
    client.chat.completions.create(model="llama3", messages=MESSAGES)
    keys = [call.request.headers["Idempotency-Key"] for call in route.calls]
    assert len(set(keys)) == 2


def test_caller_supplied_idempotency_key_is_sent(server: respx.MockRouter, client: Client) -> None:
    route = server.post("/v1/chat/completions").respond(202, json=job_body())
    client.chat.completions.create(model="llama3", messages=MESSAGES, idempotency_key="mine-1")
    assert route.calls.last.request.headers["Idempotency-Key"] == "mine-1"


def test_retries_5xx_then_succeeds(server: respx.MockRouter, client: Client) -> None:
    route = server.get("/v1/jobs/job-1").mock(
        side_effect=[
            httpx.Response(503, json=error_body("busy")),
            httpx.Response(500, json=error_body("oops")),
            httpx.Response(200, json=entry_body("job-1")),
        ]
    )
    assert client.jobs.get("job-1").status == "QUEUED"
    assert route.call_count == 3


def test_gives_up_after_max_retries(server: respx.MockRouter, client: Client) -> None:
    route = server.get("/v1/jobs/job-1").respond(500, json=error_body("down"))
    with pytest.raises(InternalServerError):
        client.jobs.get("job-1")
    assert route.call_count == 1 + _constants.DEFAULT_MAX_RETRIES
    route.reset()
    with pytest.raises(InternalServerError):
        client.with_options(max_retries=4).jobs.get("job-1")
    assert route.call_count == 5


@pytest.mark.parametrize("status", [408, 409, 429])
def test_retries_other_retryable_statuses(
    server: respx.MockRouter, client: Client, status: int
) -> None:
    route = server.get("/v1/jobs/job-1").mock(
        side_effect=[httpx.Response(status), httpx.Response(200, json=entry_body("job-1"))]
    )
    client.jobs.get("job-1")
    assert route.call_count == 2


@pytest.mark.parametrize(("status", "error"), [(400, BadRequestError), (404, NotFoundError)])
def test_does_not_retry_client_errors(
    server: respx.MockRouter, client: Client, status: int, error: type[Exception]
) -> None:
    route = server.get("/v1/jobs/job-1").respond(status, json=error_body("no"))
    with pytest.raises(error):
        client.jobs.get("job-1")
    assert route.call_count == 1


def test_connection_errors_are_retried_then_raised(
    server: respx.MockRouter, client: Client
) -> None:
    route = server.get("/v1/jobs/job-1").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(APIConnectionError):
        client.jobs.get("job-1")
    assert route.call_count == 1 + _constants.DEFAULT_MAX_RETRIES


def test_honours_retry_after(
    server: respx.MockRouter, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(Client, "_sleep", lambda self, seconds: slept.append(seconds))
    server.get("/v1/jobs/job-1").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "2.5"}),
            httpx.Response(503, headers={"retry-after-ms": "1200"}),
            httpx.Response(200, json=entry_body("job-1")),
        ]
    )
    client.jobs.get("job-1")
    assert slept == [2.5, 1.2]


def test_rate_limit_error_after_retries(
    server: respx.MockRouter, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Client, "_sleep", lambda self, seconds: None)
    server.get("/v1/jobs/job-1").respond(429, headers={"Retry-After": "1"})
    with pytest.raises(RateLimitError):
        client.jobs.get("job-1")


def test_retry_after_parsing() -> None:
    now = time.time()
    assert _retry.retry_after_seconds(httpx.Headers({"retry-after": "3"})) == 3.0
    assert _retry.retry_after_seconds(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    date = email.utils.formatdate(now + 10, usegmt=True)
    parsed = _retry.retry_after_seconds(httpx.Headers({"retry-after": date}), now=now)
    assert parsed is not None and 8 <= parsed <= 11
    assert _retry.retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None
    assert _retry.retry_after_seconds(httpx.Headers({"retry-after": "-1"})) is None
    too_long = str(_constants.MAX_RETRY_AFTER + 1)
    assert _retry.retry_after_seconds(httpx.Headers({"retry-after": too_long})) is None
    assert _retry.retry_after_seconds(httpx.Headers()) is None


def test_backoff_grows_with_jitter_and_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_constants, "INITIAL_RETRY_DELAY", 0.5)
    monkeypatch.setattr(_constants, "MAX_RETRY_DELAY", 8.0)
    for retries_done, base in [(0, 0.5), (1, 1.0), (2, 2.0), (10, 8.0)]:
        delays = {_retry.backoff_seconds(retries_done) for _ in range(50)}
        assert all(base * (1 - _constants.RETRY_JITTER) <= d <= base for d in delays)
        assert len(delays) > 1  # jittered, not lockstep


def test_retry_decisions() -> None:
    assert all(_retry.is_retryable_status(code) for code in (408, 409, 429, 500, 503, 599))
    assert not any(_retry.is_retryable_status(code) for code in (400, 401, 403, 404, 413, 422))
    assert _retry.is_retryable_transport_error(httpx.ConnectError("x"))
    assert not _retry.is_retryable_transport_error(httpx.UnsupportedProtocol("x"))


def _refused() -> httpx.ConnectError:
    return httpx.ConnectError("refused")


@pytest.mark.parametrize(
    ("tries", "lost"),
    [
        ([_refused(), _refused(), _refused()], False),  # never left this machine
        ([httpx.ConnectTimeout("slow"), _refused(), _refused()], False),
        ([httpx.ReadTimeout("no answer"), _refused(), _refused()], True),  # an earlier try
        ([_refused(), _refused(), httpx.ReadError("reset")], True),
        ([_refused(), _refused(), httpx.RemoteProtocolError("cut")], True),
        ([_refused(), _refused(), httpx.Response(503)], False),  # the server said: not taken
        ([_refused(), _refused(), httpx.Response(504)], True),  # a gateway gave up waiting
    ],
)
def test_an_error_says_whether_the_answer_of_a_try_that_arrived_was_lost(
    server: respx.MockRouter, client: Client, tries: list, lost: bool
) -> None:
    server.post("/v1/chat/completions").mock(side_effect=tries)
    with pytest.raises(APIError) as raised:
        client.chat.completions.create(model="llama3", messages=MESSAGES)
    assert raised.value.answer_lost is lost


async def test_the_async_client_marks_a_lost_answer_too(server: respx.MockRouter) -> None:
    server.post("/v1/chat/completions").mock(side_effect=httpx.ReadTimeout("no answer"))
    async with AsyncClient(base_url=BASE_URL, api_key=API_KEY, max_retries=0) as client:
        with pytest.raises(APIError) as raised:
            await client.chat.completions.create(model="llama3", messages=MESSAGES)
    assert raised.value.answer_lost is True


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "got an empty one"),
        ("a b", "got one with a space"),
        ("caf\u00e9", "got one holding '\u00e9'"),
        ("k" * 256, "got one of 256 characters"),
    ],
)
def test_a_key_the_server_would_refuse_is_refused_before_sending(
    server: respx.MockRouter, client: Client, key: str, why: str
) -> None:
    route = server.post("/v1/chat/completions").respond(202, json=job_body())
    with pytest.raises(InvalidRequestError, match="printable ASCII") as refused:
        client.chat.completions.create(model="llama3", messages=MESSAGES, idempotency_key=key)
    assert not route.called
    assert why in str(refused.value)  # what is wrong with it, not only its length


def test_a_bulk_key_leaves_room_for_its_chunk_numbers(
    server: respx.MockRouter, client: Client
) -> None:
    route = server.post("/v1/chat/completions/bulk").respond(
        202, json={"object": "list", "data": [job_body()]}
    )
    requests = [{"model": "llama3", "messages": MESSAGES}]
    with pytest.raises(InvalidRequestError, match="1 to 240"):
        client.chat.completions.create_many(requests, idempotency_key="k" * 241)
    assert not route.called
    client.chat.completions.create_many(requests, idempotency_key="k" * 240)
    assert route.calls.last.request.headers["Idempotency-Key"] == "k" * 240 + "-0"
