"""A result an older server version stored under looser rules is read as stored, not refused.

``ChatCompletion`` now needs at least one choice; a job completed before that
may hold ``choices: []``. The server serves it as stored (``model_construct``);
the client reads it the same way instead of failing the whole poll.
"""

from __future__ import annotations

import pytest
import respx
from conftest import completion_body, entry_body
from openbeepboop import AsyncClient, Client, PollEntry
from openbeepboop._exceptions import APIResponseValidationError


def _empty(job_id: str = "job-old") -> dict:
    return entry_body(job_id, "COMPLETED", result=completion_body(choices=[]))


def _assert_as_stored(entry: PollEntry, job_id: str = "job-old") -> None:
    assert entry.id == job_id and entry.status == "COMPLETED"
    assert entry.result is not None and entry.result.choices == []
    assert entry.result.model_dump(mode="json")["choices"] == []


def test_poll_get_list_and_result_read_an_old_result_without_choices(
    server: respx.MockRouter, client: Client
) -> None:
    both = [entry_body("job-new", "COMPLETED"), _empty()]
    server.post("/v1/results/poll").respond(200, json=both)
    server.get("/v1/jobs/job-old").respond(200, json=_empty())
    server.get("/v1/jobs").respond(200, json={"object": "list", "data": [_empty()]})
    new, old = client.jobs.poll(["job-new", "job-old"])
    assert new.result is not None and new.result.choices[0].message.content == "answer to job-new"
    _assert_as_stored(old)
    _assert_as_stored(client.jobs.get("job-old"))
    _assert_as_stored(client.jobs.list().data[0])
    completion = client.jobs.result("job-old", wait=False)
    assert completion is not None and completion.choices == []


async def test_the_async_client_reads_it_too(server: respx.MockRouter) -> None:
    server.post("/v1/results/poll").respond(200, json=[_empty()])
    async with AsyncClient(base_url="http://obb.test", api_key="sk-test") as client:
        [entry] = await client.jobs.poll(["job-old"])
    _assert_as_stored(entry)


def test_an_entry_that_breaks_the_contract_elsewhere_is_still_refused(
    server: respx.MockRouter, client: Client
) -> None:
    broken = {**_empty(), "attempts": "many"}
    server.post("/v1/results/poll").respond(200, json=[broken])
    with pytest.raises(APIResponseValidationError):
        client.jobs.poll(["job-old"])
