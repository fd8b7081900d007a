"""The synchronous client against a mocked server: submit, jobs, handles, models."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import respx
from conftest import API_KEY, BASE_URL, completion_body, entry_body, error_body, job_body
from openbeepboop import (
    BulkSubmitError,
    ChatCompletion,
    Client,
    ClientClosedError,
    InvalidRequestError,
    Job,
    JobCancelledError,
    JobFailedError,
    JobStatus,
    NotFoundError,
    OpenBeepBoopError,
    PermissionDeniedError,
    RateLimitError,
)
from openbeepboop._resources import chat as chat_module

MESSAGES = [{"role": "user", "content": "Hi"}]


def sent_json(route: respx.Route) -> dict:
    return json.loads(route.calls.last.request.content)


def test_create_returns_a_job_and_sends_the_openai_body(
    server: respx.MockRouter, client: Client
) -> None:
    route = server.post("/v1/chat/completions").respond(202, json=job_body("job-1"))
    job = client.chat.completions.create(
        model="llama3",
        messages=MESSAGES,
        temperature=0.2,
        response_format={"type": "json_object"},
        seed=7,
    )
    assert isinstance(job, Job)
    assert (job.id, job.status, job.model, job.created_at) == (
        "job-1",
        "QUEUED",
        "llama3",
        1_700_000_000,
    )
    assert sent_json(route) == {
        "model": "llama3",
        "messages": MESSAGES,
        "temperature": 0.2,
        "response_format": {"type": "json_object"},
        "seed": 7,
    }
    request = route.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["User-Agent"].startswith("openbeepboop-client")


def test_model_falls_back_to_default_model(server: respx.MockRouter) -> None:
    route = server.post("/v1/chat/completions").respond(202, json=job_body())
    client = Client(base_url=BASE_URL, api_key=API_KEY, default_model="fallback")
    client.chat.completions.create(messages=MESSAGES)
    assert sent_json(route)["model"] == "fallback"


def test_no_model_anywhere_is_an_error_before_sending(
    server: respx.MockRouter, client: Client
) -> None:
    route = server.post("/v1/chat/completions").respond(202, json=job_body())
    with pytest.raises(InvalidRequestError, match="no model"):
        client.chat.completions.create(messages=MESSAGES)
    assert not route.called


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"messages": []}, "'messages'"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "'messages.0.role'"),
        ({"messages": MESSAGES, "stream": True}, "stream=true is not supported"),
        ({"messages": MESSAGES, "temperature": 5}, "'temperature'"),
    ],
)
def test_invalid_requests_are_caught_before_sending(
    server: respx.MockRouter, client: Client, kwargs: dict, match: str
) -> None:
    route = server.post("/v1/chat/completions").respond(202, json=job_body())
    with pytest.raises(InvalidRequestError, match=match):
        client.chat.completions.create(model="llama3", **kwargs)
    assert not route.called


def test_status_reads_like_an_attribute_and_refreshes_when_called(
    server: respx.MockRouter, client: Client
) -> None:
    server.post("/v1/chat/completions").respond(202, json=job_body("job-1"))
    server.get("/v1/jobs/job-1").respond(200, json=entry_body("job-1", "PROCESSING"))
    job = client.chat.completions.create(model="llama3", messages=MESSAGES)
    assert job.status == "QUEUED"
    assert f"{job.status}" == "QUEUED"
    assert job.status() == "PROCESSING"
    assert job.status == "PROCESSING"
    assert job.entry is not None and job.entry.status == "PROCESSING"


def test_get_waits_and_returns_the_completion(server: respx.MockRouter, client: Client) -> None:
    server.post("/v1/chat/completions").respond(202, json=job_body("job-1"))
    extra = {"system_fingerprint": "fp_1", "provider_field": {"x": 1}}
    poll = server.post("/v1/results/poll").mock(
        side_effect=[
            httpx.Response(200, json=[entry_body("job-1", "PROCESSING")]),
            httpx.Response(
                200,
                json=[entry_body("job-1", "COMPLETED", result=completion_body("Hey", **extra))],
            ),
        ]
    )
    job = client.chat.completions.create(model="llama3", messages=MESSAGES)
    result = job.get(wait=True)
    assert isinstance(result, ChatCompletion)
    assert result.choices[0].message.content == "Hey"
    assert result.model_dump()["system_fingerprint"] == "fp_1"  # unknown fields kept
    assert job.status == "COMPLETED"
    assert job.status == JobStatus.COMPLETED
    assert poll.call_count == 2


def test_get_without_wait_returns_none_while_unfinished(
    server: respx.MockRouter, client: Client
) -> None:
    server.get("/v1/jobs/job-1").respond(200, json=entry_body("job-1", "QUEUED"))
    assert client.jobs.result("job-1", wait=False) is None


def test_get_raises_for_failed_and_cancelled_jobs(server: respx.MockRouter, client: Client) -> None:
    server.post("/v1/chat/completions").respond(202, json=job_body("job-1"))
    job = client.chat.completions.create(model="llama3", messages=MESSAGES)
    server.post("/v1/results/poll").respond(200, json=[entry_body("job-1", "FAILED")])
    with pytest.raises(JobFailedError) as failed:
        job.get()
    assert failed.value.job_id == "job-1"
    assert failed.value.error_message == "model exploded"
    assert failed.value.error_type == "inference_error"
    assert failed.value.entry.status == "FAILED"
    assert "model exploded" in str(failed.value)

    server.post("/v1/results/poll").respond(200, json=[entry_body("job-1", "CANCELLED")])
    with pytest.raises(JobCancelledError) as cancelled:
        job.get()
    assert cancelled.value.entry.status == "CANCELLED"


def test_get_of_an_unknown_job_is_not_found(server: respx.MockRouter, client: Client) -> None:
    server.post("/v1/results/poll").respond(200, json=[entry_body("job-x", "NOT_FOUND")])
    server.get("/v1/jobs/job-x").respond(404, json=error_body("job not found", "not_found"))
    with pytest.raises(NotFoundError, match="job not found"):
        client.jobs.result("job-x")


def test_cancel(server: respx.MockRouter, client: Client) -> None:
    server.post("/v1/chat/completions").respond(202, json=job_body("job-1"))
    route = server.post("/v1/jobs/job-1/cancel").respond(200, json=entry_body("job-1", "CANCELLED"))
    job = client.chat.completions.create(model="llama3", messages=MESSAGES)
    assert job.cancel().status == "CANCELLED"
    assert job.status == "CANCELLED"
    assert route.called


def test_job_ids_are_quoted_into_one_path_segment(server: respx.MockRouter, client: Client) -> None:
    route = server.get("/v1/jobs/job-a%2F..%2Fb").respond(200, json=entry_body("job-a/../b"))
    client.jobs.get("job-a/../b")
    assert route.called


def test_list_sends_filters_and_parses_the_page(server: respx.MockRouter, client: Client) -> None:
    route = server.get("/v1/jobs").respond(
        200,
        json={
            "object": "list",
            "data": [entry_body("job-2", "FAILED"), entry_body("job-1", "FAILED")],
            "has_more": True,
            "next_after": "job-1",
        },
    )
    page = client.jobs.list(status="FAILED", limit=2, after="job-3")
    params = route.calls.last.request.url.params
    assert dict(params) == {"status": "FAILED", "limit": "2", "after": "job-3"}
    assert [entry.id for entry in page.data] == ["job-2", "job-1"]
    assert page.has_more and page.next_after == "job-1"


def test_poll_is_chunked_and_keeps_order(server: respx.MockRouter, client: Client) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        ids = json.loads(request.content)["ids"]
        return httpx.Response(200, json=[entry_body(job_id, "QUEUED") for job_id in ids])

    route = server.post("/v1/results/poll").mock(side_effect=answer)
    ids = [f"job-{n}" for n in range(2_500)]
    entries = client.jobs.poll(ids)
    assert [entry.id for entry in entries] == ids
    sizes = [len(json.loads(call.request.content)["ids"]) for call in route.calls]
    assert sizes == [1_000, 1_000, 500]
    assert client.jobs.poll([]) == []


def test_poll_with_too_long_a_wait_is_rejected_locally(client: Client) -> None:
    with pytest.raises(InvalidRequestError, match="wait"):
        client.jobs.poll(["job-1"], wait=3600)


def test_create_many_chunks_and_keeps_order(
    server: respx.MockRouter, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_module, "MAX_BULK_SUBMIT", 3)

    def answer(request: httpx.Request) -> httpx.Response:
        requests = json.loads(request.content)["requests"]
        data = [job_body(f"job-{r['messages'][0]['content']}") for r in requests]
        return httpx.Response(202, json={"object": "list", "data": data})

    route = server.post("/v1/chat/completions/bulk").mock(side_effect=answer)
    requests = [
        {"model": "llama3", "messages": [{"role": "user", "content": str(n)}]} for n in range(7)
    ]
    jobs = client.chat.completions.create_many(requests)
    assert [job.id for job in jobs] == [f"job-{n}" for n in range(7)]
    sizes = [len(json.loads(call.request.content)["requests"]) for call in route.calls]
    assert sizes == [3, 3, 1]
    keys = {call.request.headers["Idempotency-Key"] for call in route.calls}
    assert len(keys) == 3


def test_create_many_splits_large_bodies(
    server: respx.MockRouter, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_module, "MAX_BULK_BODY_BYTES", 1_000)

    def answer(request: httpx.Request) -> httpx.Response:
        count = len(json.loads(request.content)["requests"])
        return httpx.Response(202, json={"object": "list", "data": [job_body()] * count})

    route = server.post("/v1/chat/completions/bulk").mock(side_effect=answer)
    big = [{"model": "m", "messages": [{"role": "user", "content": "x" * 400}]}] * 5
    assert len(client.chat.completions.create_many(big)) == 5
    assert route.call_count >= 3
    assert all(len(call.request.content) <= 1_100 for call in route.calls)


def test_create_many_validates_everything_first(server: respx.MockRouter, client: Client) -> None:
    route = server.post("/v1/chat/completions/bulk").respond(202, json={"data": []})
    with pytest.raises(InvalidRequestError, match=r"request 1: 'messages'"):
        client.chat.completions.create_many(
            [{"model": "m", "messages": MESSAGES}, {"model": "m", "messages": []}]
        )
    assert not route.called


def test_create_many_partial_failure_keeps_the_jobs_made(
    server: respx.MockRouter, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_module, "MAX_BULK_SUBMIT", 2)
    server.post("/v1/chat/completions/bulk").mock(
        side_effect=[
            httpx.Response(202, json={"object": "list", "data": [job_body("a"), job_body("b")]}),
            httpx.Response(429, json=error_body("slow down")),
            httpx.Response(429, json=error_body("slow down")),
            httpx.Response(429, json=error_body("slow down")),
        ]
    )
    with pytest.raises(BulkSubmitError) as raised:
        client.chat.completions.create_many([{"model": "m", "messages": MESSAGES}] * 4)
    assert [job.id for job in raised.value.jobs] == ["a", "b"]
    assert isinstance(raised.value.__cause__, RateLimitError)
    assert "2 of 4" in str(raised.value)


def test_models_list(server: respx.MockRouter, client: Client) -> None:
    server.get("/v1/models").respond(
        200, json={"object": "list", "data": [{"id": "llama3", "object": "model"}]}
    )
    assert [card.id for card in client.models.list().data] == ["llama3"]


def test_pool_status(server: respx.MockRouter, client: Client) -> None:
    server.get("/v1/status").respond(
        200,
        json={"generated_at": 5.0, "window_seconds": 300, "node_seen_seconds": 300, "queued": 4},
    )
    status = client.pool.status()
    assert status.queued == 4 and status.models == [] and status.window.error_rate is None


def test_pool_status_with_a_user_key(server: respx.MockRouter, client: Client) -> None:
    server.get("/v1/status").respond(403, json=error_body("no", "permission_error"))
    with pytest.raises(PermissionDeniedError):
        client.pool.status()


def test_base_url_with_v1_suffix_still_hits_the_right_paths(server: respx.MockRouter) -> None:
    route = server.get("/v1/jobs/job-1").respond(200, json=entry_body("job-1"))
    Client(base_url=f"{BASE_URL}/v1/", api_key=API_KEY).jobs.get("job-1")
    assert route.calls.last.request.url == f"{BASE_URL}/v1/jobs/job-1"


def test_authorization_is_never_logged(
    server: respx.MockRouter, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.post("/v1/chat/completions").mock(
        side_effect=[
            httpx.Response(500, json=error_body("x")),
            httpx.Response(202, json=job_body()),
        ]
    )
    server.get("/v1/jobs/job-1").respond(401, json=error_body("bad key"))
    client.chat.completions.create(model="llama3", messages=MESSAGES)
    with pytest.raises(Exception, match="bad key") as raised:
        client.jobs.get("job-1")
    assert caplog.records  # something was logged (the retry, the responses)
    assert API_KEY not in caplog.text
    assert "Authorization" not in caplog.text
    assert API_KEY not in str(raised.value)


def test_with_options_shares_the_pool_and_close_is_owned(
    server: respx.MockRouter, client: Client
) -> None:
    server.get("/v1/jobs/job-1").respond(200, json=entry_body("job-1"))
    fast = client.with_options(timeout=1.5, max_retries=0)
    assert fast.max_retries == 0 and fast.timeout.read == 1.5
    assert fast._http is client._http
    fast.jobs.get("job-1")
    fast.close()
    assert client._http is not None and not client._http.is_closed
    client.close()
    assert client._http.is_closed


def test_a_closed_client_says_so_in_its_own_words(server: respx.MockRouter) -> None:
    server.post("/v1/chat/completions").respond(202, json=job_body("job-1"))
    server.get("/v1/jobs/job-1").respond(200, json=entry_body("job-1"))
    client = Client(base_url=BASE_URL, api_key=API_KEY)
    job = client.chat.completions.create(model="llama3", messages=MESSAGES)
    fast = client.with_options(max_retries=0)
    client.close()
    with pytest.raises(ClientClosedError, match=r"this Client is closed .*make a new Client"):
        client.jobs.get("job-1")
    with pytest.raises(ClientClosedError, match="closed"):
        job.refresh()  # a handle asks through its client
    with pytest.raises(ClientClosedError, match="connection pool is closed"):
        fast.jobs.get("job-1")  # shares the pool just closed
    with pytest.raises(ClientClosedError):
        client.with_options(timeout=1)
    # Code that caught httpx's RuntimeError still catches it; so does the base class.
    assert issubclass(ClientClosedError, RuntimeError)
    assert issubclass(ClientClosedError, OpenBeepBoopError)


def test_a_client_closed_before_its_first_call_opens_no_pool(server: respx.MockRouter) -> None:
    route = server.post("/v1/chat/completions").respond(202, json=job_body("job-1"))
    with Client(base_url=BASE_URL, api_key=API_KEY) as client:
        pass
    with pytest.raises(ClientClosedError, match="this Client is closed"):
        client.chat.completions.create(model="llama3", messages=MESSAGES)
    assert not route.called
    assert client._http is None
    client.close()  # closing again is harmless


def test_a_caller_supplied_http_client_is_used_and_not_closed(server: respx.MockRouter) -> None:
    route = server.get("/v1/jobs/job-1").respond(200, json=entry_body("job-1"))
    http = httpx.Client()
    with Client(base_url=BASE_URL, api_key=API_KEY, http_client=http) as client:
        client.jobs.get("job-1")
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert not http.is_closed
    http.close()
