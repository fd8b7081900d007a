"""AsyncClient mirrors Client: the same calls, awaited."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import respx
from conftest import API_KEY, BASE_URL, completion_body, entry_body, error_body, job_body
from openbeepboop import (
    AsyncClient,
    AsyncJob,
    AuthenticationError,
    ChatCompletion,
    ClientClosedError,
    InternalServerError,
    JobCancelledError,
    JobFailedError,
    NotFoundError,
)

MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture
async def aclient() -> AsyncIterator[AsyncClient]:
    async with AsyncClient(base_url=BASE_URL, api_key=API_KEY) as client:
        yield client


async def test_create_and_get(server: respx.MockRouter, aclient: AsyncClient) -> None:
    submit = server.post("/v1/chat/completions").respond(202, json=job_body("job-1"))
    server.post("/v1/results/poll").mock(
        side_effect=[
            httpx.Response(200, json=[entry_body("job-1", "QUEUED")]),
            httpx.Response(
                200, json=[entry_body("job-1", "COMPLETED", result=completion_body("Yo"))]
            ),
        ]
    )
    job = await aclient.chat.completions.create(model="llama3", messages=MESSAGES, top_p=0.5)
    assert isinstance(job, AsyncJob)
    assert job.id == "job-1" and job.status == "QUEUED"
    assert json.loads(submit.calls.last.request.content)["top_p"] == 0.5
    assert submit.calls.last.request.headers["Idempotency-Key"]
    result = await job.get(wait=True)
    assert isinstance(result, ChatCompletion)
    assert result.choices[0].message.content == "Yo"
    assert job.status == "COMPLETED"


async def test_status_refresh_and_cancel(server: respx.MockRouter, aclient: AsyncClient) -> None:
    server.post("/v1/chat/completions").respond(202, json=job_body("job-1"))
    server.get("/v1/jobs/job-1").respond(200, json=entry_body("job-1", "PROCESSING"))
    server.post("/v1/jobs/job-1/cancel").respond(200, json=entry_body("job-1", "CANCELLED"))
    job = await aclient.chat.completions.create(model="llama3", messages=MESSAGES)
    assert await job.status() == "PROCESSING"
    assert job.status == "PROCESSING"
    assert (await job.cancel()).status == "CANCELLED"
    server.post("/v1/results/poll").respond(200, json=[entry_body("job-1", "CANCELLED")])
    with pytest.raises(JobCancelledError):
        await job.get()


async def test_failed_and_unknown(server: respx.MockRouter, aclient: AsyncClient) -> None:
    server.post("/v1/results/poll").respond(
        200, json=[entry_body("job-1", "FAILED"), entry_body("job-x", "NOT_FOUND")]
    )
    server.get("/v1/jobs/job-x").respond(404, json=error_body("job not found"))
    entries = await aclient.jobs.poll(["job-1", "job-x"])
    assert [entry.status for entry in entries] == ["FAILED", "NOT_FOUND"]
    server.post("/v1/results/poll").respond(200, json=[entry_body("job-1", "FAILED")])
    with pytest.raises(JobFailedError, match="model exploded"):
        await aclient.jobs.result("job-1")
    server.post("/v1/results/poll").respond(200, json=[entry_body("job-x", "NOT_FOUND")])
    with pytest.raises(NotFoundError):
        await aclient.jobs.result("job-x")


async def test_create_many_list_get_models(server: respx.MockRouter, aclient: AsyncClient) -> None:
    server.post("/v1/chat/completions/bulk").respond(
        202, json={"object": "list", "data": [job_body("job-1"), job_body("job-2")]}
    )
    server.get("/v1/jobs").respond(
        200, json={"object": "list", "data": [entry_body("job-2")], "has_more": False}
    )
    server.get("/v1/jobs/job-1").respond(200, json=entry_body("job-1", "PROCESSING"))
    server.get("/v1/models").respond(200, json={"object": "list", "data": [{"id": "llama3"}]})
    server.get("/v1/status").respond(
        200, json={"generated_at": 1.0, "window_seconds": 60, "node_seen_seconds": 60, "queued": 2}
    )
    jobs = await aclient.chat.completions.create_many(
        [{"model": "m", "messages": MESSAGES}, {"model": "m", "messages": MESSAGES}]
    )
    assert [job.id for job in jobs] == ["job-1", "job-2"]
    assert (await aclient.jobs.list(status="QUEUED")).data[0].id == "job-2"
    assert (await aclient.jobs.get("job-1")).status == "PROCESSING"
    assert (await aclient.models.list()).data[0].id == "llama3"
    assert (await aclient.pool.status()).queued == 2


async def test_errors_and_retries(server: respx.MockRouter, aclient: AsyncClient) -> None:
    route = server.get("/v1/jobs/job-1").respond(500, json=error_body("down"))
    with pytest.raises(InternalServerError):
        await aclient.jobs.get("job-1")
    assert route.call_count == 1 + aclient.max_retries
    server.get("/v1/jobs/job-2").respond(401, json=error_body("bad key"))
    with pytest.raises(AuthenticationError):
        await aclient.jobs.get("job-2")


async def test_with_options_and_close(server: respx.MockRouter, aclient: AsyncClient) -> None:
    server.get("/v1/jobs/job-1").respond(200, json=entry_body("job-1"))
    quick = aclient.with_options(max_retries=0)
    await quick.jobs.get("job-1")
    await quick.close()
    assert aclient._http is not None and not aclient._http.is_closed


async def test_a_closed_async_client_says_so_in_its_own_words(server: respx.MockRouter) -> None:
    server.get("/v1/jobs/job-1").respond(200, json=entry_body("job-1"))
    async with AsyncClient(base_url=BASE_URL, api_key=API_KEY) as client:
        await client.jobs.get("job-1")
        quick = client.with_options(max_retries=0)
    with pytest.raises(ClientClosedError, match=r"this AsyncClient is closed .*new AsyncClient"):
        await client.jobs.get("job-1")
    with pytest.raises(ClientClosedError, match="connection pool is closed"):
        await quick.jobs.get("job-1")
    unused = AsyncClient(base_url=BASE_URL, api_key=API_KEY)
    await unused.close()
    with pytest.raises(ClientClosedError, match="this AsyncClient is closed"):
        await unused.models.list()
