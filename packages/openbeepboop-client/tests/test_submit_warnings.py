"""Warnings a server attaches to a submit: kept on the job handles, logged once at WARNING."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import respx
from conftest import API_KEY, BASE_URL, job_body
from openbeepboop import AsyncClient, Client
from openbeepboop._resources import chat as chat_module

#: The logger the warnings go to (a command line silences it and prints its own line).
LOGGER = "openbeepboop._submit_warnings"


def warning(model: str | None = "nobody", code: str = "model_not_served") -> dict:
    return {"code": code, "model": model, "message": f"no node serving model {model!r} was seen"}


def test_create_keeps_and_logs_the_warning(
    server: respx.MockRouter, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    server.post("/v1/chat/completions").respond(
        202, json={**job_body("job-1", model="nobody"), "warnings": [warning()]}
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        job = client.chat.completions.create(model="nobody", messages=[{"role": "user"}])
    assert [(w.code, w.model) for w in job.warnings] == [("model_not_served", "nobody")]
    assert [record.getMessage() for record in caplog.records] == [warning()["message"]]
    assert caplog.records[0].levelno == logging.WARNING


def test_no_warning_no_log(
    server: respx.MockRouter, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    server.post("/v1/chat/completions").respond(202, json=job_body("job-1"))  # an older server
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        job = client.chat.completions.create(model="llama3", messages=[{"role": "user"}])
    assert job.warnings == [] and not caplog.records


def test_bulk_warnings_go_to_the_jobs_of_their_model_and_are_logged_once(
    server: respx.MockRouter,
    client: Client,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(chat_module, "MAX_BULK_SUBMIT", 2)  # three chunks

    def answer(request: httpx.Request) -> httpx.Response:
        models = [item["model"] for item in json.loads(request.content)["requests"]]
        data = [job_body(model=model) for model in models]
        warned = [warning(m) for m in dict.fromkeys(models) if m == "nobody"]
        return httpx.Response(202, json={"object": "list", "data": data, "warnings": warned})

    server.post("/v1/chat/completions/bulk").mock(side_effect=answer)
    requests = [
        {"model": model, "messages": [{"role": "user", "content": "x"}]}
        for model in ("nobody", "llama3", "nobody", "nobody", "llama3")
    ]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        jobs = client.chat.completions.create_many(requests)
    assert [len(job.warnings) for job in jobs] == [1, 0, 1, 1, 0]
    assert [record.getMessage() for record in caplog.records] == [warning()["message"]]


def test_a_warning_about_no_model_concerns_every_job_of_its_answer(
    server: respx.MockRouter, client: Client
) -> None:
    server.post("/v1/chat/completions/bulk").respond(
        202,
        json={"data": [job_body(), job_body(model="b")], "warnings": [warning(None, "future")]},
    )
    jobs = client.chat.completions.create_many(
        [{"model": m, "messages": [{"role": "user"}]} for m in ("llama3", "b")]
    )
    assert [[w.code for w in job.warnings] for job in jobs] == [["future"], ["future"]]


async def test_async_create_keeps_the_warning(server: respx.MockRouter) -> None:
    server.post("/v1/chat/completions").respond(
        202, json={**job_body("job-1", model="nobody"), "warnings": [warning()]}
    )
    async with AsyncClient(base_url=BASE_URL, api_key=API_KEY) as client:
        job = await client.chat.completions.create(model="nobody", messages=[{"role": "user"}])
    assert [w.model for w in job.warnings] == ["nobody"]
