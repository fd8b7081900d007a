"""Every way a request can be wrong answers with the OpenAI error envelope, never a 500."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openbeepboop_schemas import ErrorEnvelope, Role
from openbeepboop_server.app import create_app
from openbeepboop_server.context import ServerContext
from openbeepboop_server.db.migrate import upgrade_to_head
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys, bearer, chat, make_settings

LIMIT = 4096


@pytest.fixture
def small_client(tmp_path: Path) -> Iterator[TestClient]:
    """An app whose body limit is a few kilobytes."""
    settings = make_settings(tmp_path, server={"max_body_bytes": LIMIT})
    upgrade_to_head(settings.database.url)
    with TestClient(create_app(settings)) as client:
        yield client


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    envelope = ErrorEnvelope.model_validate(response.json())
    return envelope.error.model_dump()


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"model": 5, "messages": [{"role": "user"}]}, "model"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, "model"),
        ("/v1/chat/completions", {"model": "m"}, "messages"),
        ("/v1/chat/completions", {"model": "m", "messages": []}, "messages"),
        (
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "robot"}]},
            "messages.0.role",
        ),
        ("/v1/chat/completions", chat(temperature=7), "temperature"),
        ("/v1/chat/completions", chat(top_p=True), "top_p"),
        ("/v1/chat/completions", chat(n="2"), "n"),
        ("/v1/chat/completions", chat(n=2.5), "n"),
        ("/v1/chat/completions", chat(stream="false"), "stream"),
        ("/v1/chat/completions", chat(stream=0), "stream"),
        ("/v1/chat/completions", chat(stream=True), "stream"),
        ("/v1/chat/completions/bulk", {"requests": []}, "requests"),
        (
            "/v1/chat/completions/bulk",
            {"requests": [chat(), {"model": "m"}]},
            "requests.1.messages",
        ),
        ("/v1/chat/completions/bulk", {"requests": [chat()], "extra": 1}, "extra"),
        ("/v1/results/poll", {"ids": "job-1"}, "ids"),
        ("/v1/results/poll", {"ids": []}, "ids"),
        ("/v1/results/poll", {"ids": ["job-1"], "wait": -1}, "wait"),
        ("/v1/results/poll", {"ids": ["job-1"], "wait": 31}, "wait"),
        ("/v1/results/poll", {"ids": ["job-1"], "unknown": True}, "unknown"),
    ],
)
def test_invalid_user_bodies_name_the_field(
    client: TestClient, api_keys: ApiKeys, path: str, body: Any, param: str
) -> None:
    error = _error(client.post(path, json=body, headers=bearer(api_keys.user)), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param or error["param"].startswith(param + ".")
    assert param.split(".")[0] in error["message"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/internal/queue/fetch", {"models": ["m"]}, "node_id"),
        ("/internal/queue/fetch", {"node_id": "bad id!", "models": ["m"]}, "node_id"),
        ("/internal/queue/fetch", {"node_id": "n", "models": ["m"], "max_jobs": 0}, "max_jobs"),
        ("/internal/queue/fetch", {"node_id": "n", "models": ["m"], "wait": 99}, "wait"),
        ("/internal/queue/fetch", {"node_id": "n", "models": ["m"], "colour": "red"}, "colour"),
        ("/internal/queue/submit", {"node_id": "n", "outcomes": [{"kind": "nope"}]}, "outcomes.0"),
        (
            "/internal/queue/submit",
            {
                "node_id": "n",
                "outcomes": [{"kind": "error", "job_id": "j", "lease_token": "t", "error": {}}],
            },
            "outcomes.0.error.error.message",
        ),
        ("/internal/queue/heartbeat", {"node_id": "n", "leases": [{"job_id": "j"}]}, "leases.0"),
    ],
)
def test_invalid_node_bodies_name_the_field(
    client: TestClient, api_keys: ApiKeys, path: str, body: Any, param: str
) -> None:
    error = _error(client.post(path, json=body, headers=bearer(api_keys.node)), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"].startswith(param)


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"model": "m", "messages": [',
        b"[1, 2, 3]",
        b'"a string"',
        b"\xff\xfe\x00garbage",
        b"[" * 100_00 + b"]" * 100_00,
        b"",
        b"   ",
        b"null",
    ],
    ids=["broken", "truncated", "array", "string", "binary", "deep", "empty", "blank", "null"],
)
def test_malformed_json_is_400(client: TestClient, api_keys: ApiKeys, raw: bytes) -> None:
    response = client.post(
        "/v1/chat/completions",
        content=raw,
        headers={**bearer(api_keys.user), "content-type": "application/json"},
    )
    error = _error(response, 400)
    assert error["type"] == "invalid_request_error"


def test_unknown_openai_fields_pass_through(client: TestClient, api_keys: ApiKeys) -> None:
    body = chat(model="pass", seed=7, response_format={"type": "json_object"}, logit_bias={"1": 2})
    assert (
        client.post("/v1/chat/completions", json=body, headers=bearer(api_keys.user)).status_code
        == 202
    )
    leases = client.post(
        "/internal/queue/fetch",
        json={"node_id": "n1", "models": ["pass"]},
        headers=bearer(api_keys.node),
    ).json()
    assert leases[0]["request"] == body


def test_integral_floats_are_integers_and_pass_through_is_exact(
    client: TestClient, api_keys: ApiKeys
) -> None:
    body = chat(model="exact", n=2.0, max_tokens=16.0, seed=7.0, temperature=1)
    assert (
        client.post("/v1/chat/completions", json=body, headers=bearer(api_keys.user)).status_code
        == 202
    )
    [lease] = client.post(
        "/internal/queue/fetch",
        json={"node_id": "n1", "models": ["exact"]},
        headers=bearer(api_keys.node),
    ).json()
    sent = lease["request"]
    assert (sent["n"], sent["max_tokens"], sent["temperature"]) == (2, 16, 1)
    assert isinstance(sent["seed"], float)  # not a field the server knows: untouched


def test_stream_true_says_why(client: TestClient, api_keys: ApiKeys) -> None:
    error = _error(
        client.post("/v1/chat/completions", json=chat(stream=True), headers=bearer(api_keys.user)),
        400,
    )
    assert error["param"] == "stream"
    assert "stream" in error["message"] and "poll" in error["message"]


def test_body_over_declared_limit_is_413(small_client: TestClient) -> None:
    response = small_client.post(
        "/v1/chat/completions",
        content=b"x" * (LIMIT + 1),
        headers={"content-type": "application/json", "authorization": "Bearer sk-whatever"},
    )
    error = _error(response, 413)
    assert error["code"] == "request_too_large"
    assert str(LIMIT) in error["message"]


def _user_key(client: TestClient) -> str:
    context: ServerContext = client.app.state.context  # type: ignore[attr-defined]
    return context.keys.create(Role.USER, "u")[0]


def test_streamed_body_over_limit_is_413(small_client: TestClient) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(10):
            sent += 1
            yield b"x" * 1024

    response = small_client.post(
        "/v1/chat/completions",
        content=chunks(),
        headers={**bearer(_user_key(small_client)), "content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert _error(response, 413)["code"] == "request_too_large"


def test_body_at_limit_is_accepted(small_client: TestClient) -> None:
    key = _user_key(small_client)
    padding = LIMIT - len(b'{"model":"m","messages":[{"role":"user","content":""}]}')
    body = ('{"model":"m","messages":[{"role":"user","content":"' + "y" * padding + '"}]}').encode()
    assert len(body) == LIMIT
    response = small_client.post(
        "/v1/chat/completions",
        content=body,
        headers={**bearer(key), "content-type": "application/json"},
    )
    assert response.status_code == 202, response.text


def test_invalid_content_length_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions", content=b"{}", headers={"content-length": "lots"}
    )
    assert _error(response, 400)["code"] == "invalid_header"


def test_unknown_job_is_404(client: TestClient, api_keys: ApiKeys) -> None:
    for method, path in [("GET", "/v1/jobs/job-nope"), ("POST", "/v1/jobs/job-nope/cancel")]:
        error = _error(client.request(method, path, headers=bearer(api_keys.user)), 404)
        assert error["code"] == "job_not_found"
        assert "job-nope" in error["message"]


def test_another_users_job_looks_exactly_like_an_unknown_one(
    client: TestClient, api_keys: ApiKeys
) -> None:
    job = client.post("/v1/chat/completions", json=chat(), headers=bearer(api_keys.user)).json()[
        "id"
    ]
    fake = "job-" + "0" * (len(job) - 4)
    for method, template in [("GET", "/v1/jobs/{}"), ("POST", "/v1/jobs/{}/cancel")]:
        theirs = client.request(method, template.format(job), headers=bearer(api_keys.other_user))
        unknown = client.request(method, template.format(fake), headers=bearer(api_keys.other_user))
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.json()["error"]["message"].replace(job, "ID") == unknown.json()["error"][
            "message"
        ].replace(fake, "ID")
    polled = client.post(
        "/v1/results/poll", json={"ids": [job, fake]}, headers=bearer(api_keys.other_user)
    ).json()
    assert [entry["status"] for entry in polled] == ["NOT_FOUND", "NOT_FOUND"]
    listed = client.get("/v1/jobs", headers=bearer(api_keys.other_user)).json()
    assert listed["data"] == []
    # The job itself is untouched: its owner still sees it queued.
    mine = client.get(f"/v1/jobs/{job}", headers=bearer(api_keys.user)).json()
    assert mine["status"] == "QUEUED"


def test_unknown_route_and_method(client: TestClient) -> None:
    error = _error(client.get("/v2/nothing"), 404)
    assert error["type"] == "not_found_error"
    response = client.delete("/v1/jobs")
    error = _error(response, 405)
    assert "GET" in response.headers["allow"]
    assert error["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("status=DONE", "status"),
        ("status=queued", "status"),
        ("after=", "after"),
    ],
)
def test_invalid_list_query_is_400(
    client: TestClient, api_keys: ApiKeys, query: str, param: str
) -> None:
    error = _error(client.get(f"/v1/jobs?{query}", headers=bearer(api_keys.user)), 400)
    assert error["param"] == param


@pytest.mark.parametrize("value", ["x" * 256, "tab\there"])
def test_invalid_idempotency_key_is_400(client: TestClient, api_keys: ApiKeys, value: str) -> None:
    response = client.post(
        "/v1/chat/completions",
        json=chat(),
        headers={**bearer(api_keys.user), "Idempotency-Key": value},
    )
    assert _error(response, 400)["param"] == "Idempotency-Key"


def test_unexpected_exception_is_a_logged_500_envelope(
    app: Any, api_keys: ApiKeys, context: ServerContext, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    context.queue.list_jobs = explode  # type: ignore[method-assign]
    with (
        TestClient(app, raise_server_exceptions=False) as raw,
        caplog.at_level(logging.ERROR, logger="openbeepboop_server.http.errors"),
    ):
        raw.app.state.context = context  # the same running services
        response = raw.get("/v1/jobs", headers=bearer(api_keys.user))
    error = _error(response, 500)
    assert error["type"] == "server_error"
    assert "disk on fire" not in response.text
    assert any("GET /v1/jobs" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("path", ["/openai/v1/files", "/openai/v1/batches"])
@pytest.mark.parametrize("limit", ["\u00b2", "\u0663", "1" * 5000, "-1", "0", "x"])
def test_openai_limits_that_are_not_small_ascii_integers_are_400(
    client: TestClient, api_keys: ApiKeys, path: str, limit: str
) -> None:
    # str.isdigit() takes '²' and '٣'; int() then refused the first and took the second.
    response = client.get(path, params={"limit": limit}, headers=bearer(api_keys.user))
    assert _error(response, 400)["param"] == "limit"


@pytest.mark.parametrize(
    "body",
    [
        b"garbage",
        b"--xyz\r\nNot-A-Header\r\n\r\nbody\r\n--xyz--\r\n",
    ],
)
def test_a_multipart_upload_the_parser_cannot_read_is_400(
    client: TestClient, api_keys: ApiKeys, body: bytes
) -> None:
    response = client.post(
        "/openai/v1/files",
        content=body,
        headers={
            **bearer(api_keys.user),
            "content-type": "multipart/form-data; boundary=xyz",
        },
    )
    assert _error(response, 400)["code"] == "invalid_body"


@pytest.mark.parametrize(
    ("content_type", "body", "said"),
    [
        ("multipart/form-data", b"--xyz--\r\n", "boundary"),
        (
            "multipart/form-data; boundary=xyz",
            b"".join(
                b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="f%d"\r\n'
                b"\r\n{}\n\r\n" % index
                for index in range(2)
            )
            + b"--xyz--\r\n",
            "files",
        ),
    ],
)
def test_a_multipart_body_starlette_refuses_is_400_with_a_code(
    client: TestClient, api_keys: ApiKeys, content_type: str, body: bytes, said: str
) -> None:
    """No boundary, or two file parts: Starlette's own refusals, in the envelope with a code."""
    response = client.post(
        "/openai/v1/files",
        content=body,
        headers={**bearer(api_keys.user), "content-type": content_type},
    )
    error = _error(response, 400)
    assert error["code"] == "invalid_body"
    assert "multipart body cannot be read" in error["message"] and said in error["message"]


@pytest.mark.parametrize("include_usage", ["yes", 1, ["x"]])
def test_stream_options_include_usage_must_be_a_boolean(
    client: TestClient, api_keys: ApiKeys, include_usage: object
) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": include_usage},
    }
    response = client.post("/openai/v1/chat/completions", json=body, headers=bearer(api_keys.user))
    error = _error(response, 400)
    assert error["param"] == "stream_options.include_usage" and error["code"] == "invalid_value"


@pytest.mark.parametrize("stream", [False, None])
def test_stream_options_without_stream_is_400(
    client: TestClient, api_keys: ApiKeys, stream: bool | None
) -> None:
    # As OpenAI answers it: the options would silently do nothing.
    body: dict[str, object] = {**chat(), "stream_options": {"include_usage": True}}
    if stream is not None:
        body["stream"] = stream
    response = client.post("/openai/v1/chat/completions", json=body, headers=bearer(api_keys.user))
    error = _error(response, 400)
    assert (
        error["param"] == "stream_options"
        and "only allowed when 'stream' is true" in error["message"]
    )


def test_an_upload_cut_short_before_its_closing_boundary_says_so(
    client: TestClient, api_keys: ApiKeys
) -> None:
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
        b"Content-Type: application/jsonl\r\n\r\n{}\n"
    )
    response = client.post(
        "/openai/v1/files",
        content=body,
        headers={**bearer(api_keys.user), "content-type": "multipart/form-data; boundary=xyz"},
    )
    error = _error(response, 400)
    assert (error["code"], error["param"]) == ("invalid_value", "file")
    assert "cut short" in error["message"]


def test_an_upload_over_the_line_limit_says_so(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, openai={"max_file_lines": 2})
    upgrade_to_head(settings.database.url)
    with TestClient(create_app(settings)) as client:
        keys = client.app.state.context.keys  # type: ignore[attr-defined]
        user = keys.create(Role.USER, "alice")[0]
        response = client.post(
            "/openai/v1/files",
            files={"file": ("in.jsonl", b"a\nb\nc\n")},
            data={"purpose": "batch"},
            headers=bearer(user),
        )
    error = _error(response, 400)
    assert (error["code"], error["param"]) == ("too_many_lines", "file")
