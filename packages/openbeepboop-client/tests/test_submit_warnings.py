"""Warnings a server attaches to a submit: kept on the job handles, raised once as warnings."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import httpx
import pytest
import respx
from conftest import API_KEY, BASE_URL, job_body
from openbeepboop import AsyncClient, Client, ModelNotServedWarning, SubmitWarning
from openbeepboop._resources import chat as chat_module


def warning(model: str | None = "nobody", code: str = "model_not_served") -> dict:
    return {"code": code, "model": model, "message": f"no node serving model {model!r} was seen"}


def test_create_keeps_and_warns_at_the_callers_line(
    server: respx.MockRouter, client: Client
) -> None:
    server.post("/v1/chat/completions").respond(
        202, json={**job_body("job-1", model="nobody"), "warnings": [warning()]}
    )
    with pytest.warns(ModelNotServedWarning) as caught:
        job = client.chat.completions.create(model="nobody", messages=[{"role": "user"}])
    assert [(w.code, w.model) for w in job.warnings] == [("model_not_served", "nobody")]
    (record,) = caught
    assert str(record.message) == warning()["message"]
    assert isinstance(record.message, SubmitWarning) and isinstance(record.message, UserWarning)
    assert (record.message.code, record.message.model) == ("model_not_served", "nobody")
    # It points at this test's line, not the library's insides.
    assert record.filename == __file__


def test_an_unknown_code_is_a_plain_submit_warning(
    server: respx.MockRouter, client: Client
) -> None:
    server.post("/v1/chat/completions").respond(
        202, json={**job_body("job-1"), "warnings": [warning("llama3", "quota_near")]}
    )
    with pytest.warns(SubmitWarning) as caught:
        client.chat.completions.create(model="llama3", messages=[{"role": "user"}])
    (record,) = caught
    assert type(record.message) is SubmitWarning and record.message.code == "quota_near"


def test_no_warning_no_warn(server: respx.MockRouter, client: Client) -> None:
    server.post("/v1/chat/completions").respond(202, json=job_body("job-1"))  # an older server
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        job = client.chat.completions.create(model="llama3", messages=[{"role": "user"}])
    assert job.warnings == []


def test_a_plain_script_hears_it_once_per_line_on_stderr() -> None:
    """Python's default filter: a loop of submits for an unserved model says it once."""
    script = f"""
import respx, json
from openbeepboop import Client
body = {json.dumps({**job_body("job-1", model="nobody"), "warnings": [warning()]})}
with respx.mock(base_url={BASE_URL!r}) as server:
    server.post("/v1/chat/completions").respond(202, json=body)
    with Client(base_url={BASE_URL!r}, api_key={API_KEY!r}) as client:
        for _ in range(3):
            client.chat.completions.create(model="nobody", messages=[{{"role": "user"}}])
print("done")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == "done\n"
    assert done.stderr.count("ModelNotServedWarning: ") == 1, done.stderr
    assert warning()["message"] in done.stderr


def test_bulk_warnings_go_to_the_jobs_of_their_model_and_are_warned_once(
    server: respx.MockRouter, client: Client, monkeypatch: pytest.MonkeyPatch
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
    with pytest.warns(ModelNotServedWarning) as caught:
        jobs = client.chat.completions.create_many(requests)
    assert [len(job.warnings) for job in jobs] == [1, 0, 1, 1, 0]
    assert [str(record.message) for record in caught] == [warning()["message"]]
    assert caught[0].filename == __file__


def test_a_warning_about_no_model_concerns_every_job_of_its_answer(
    server: respx.MockRouter, client: Client
) -> None:
    server.post("/v1/chat/completions/bulk").respond(
        202,
        json={"data": [job_body(), job_body(model="b")], "warnings": [warning(None, "future")]},
    )
    with pytest.warns(SubmitWarning):
        jobs = client.chat.completions.create_many(
            [{"model": m, "messages": [{"role": "user"}]} for m in ("llama3", "b")]
        )
    assert [[w.code for w in job.warnings] for job in jobs] == [["future"], ["future"]]


async def test_async_create_keeps_the_warning(server: respx.MockRouter) -> None:
    server.post("/v1/chat/completions").respond(
        202, json={**job_body("job-1", model="nobody"), "warnings": [warning()]}
    )
    async with AsyncClient(base_url=BASE_URL, api_key=API_KEY) as client:
        with pytest.warns(ModelNotServedWarning) as caught:
            job = await client.chat.completions.create(model="nobody", messages=[{"role": "user"}])
    assert [w.model for w in job.warnings] == ["nobody"]
    assert caught[0].filename == __file__
