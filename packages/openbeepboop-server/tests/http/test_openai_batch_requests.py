"""``/openai/v1/files`` and ``/openai/v1/batches`` over HTTP: Idempotency-Key on
upload and create, and the 400s that say what is wrong (docs/openai.md)."""

from __future__ import annotations

import json
from typing import Any

from openbeepboop_server.context import ServerContext
from openbeepboop_server.db.tables import jobs
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys, bearer
from tests.support.waiting import wait_until

URL = "/v1/chat/completions"
LINE = json.dumps(
    {
        "custom_id": "c1",
        "method": "POST",
        "url": URL,
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
).encode()


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def _multipart(boundary: str, filename: str | None, content: bytes) -> bytes:
    disposition = 'form-data; name="file"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            f"Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )


def _upload(client: TestClient, key: str, boundary: str, content: bytes, **headers: str) -> Any:
    return client.post(
        "/openai/v1/files",
        content=_multipart(boundary, "in.jsonl", content),
        headers={
            **bearer(key),
            "content-type": f"multipart/form-data; boundary={boundary}",
            **headers,
        },
    )


def _files(client: TestClient, key: str) -> list[str]:
    return [
        item["id"] for item in client.get("/openai/v1/files", headers=bearer(key)).json()["data"]
    ]


def _batches(client: TestClient, key: str) -> list[str]:
    answer = client.get("/openai/v1/batches", headers=bearer(key)).json()
    return [item["id"] for item in answer["data"]]


def test_a_retried_upload_with_its_key_answers_the_first_file(
    client: TestClient, api_keys: ApiKeys
) -> None:
    key = {"Idempotency-Key": "upload-1"}
    first = _upload(client, api_keys.user, "aaa", LINE, **key)
    assert first.status_code == 200, first.text
    # A retry builds a new multipart body (another boundary) around the same file.
    again = _upload(client, api_keys.user, "bbb", LINE, **key)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert _files(client, api_keys.user) == [first.json()["id"]]
    other = _error(_upload(client, api_keys.user, "ccc", LINE + b"\n" + LINE, **key), 422)
    assert (other["code"], other["param"]) == ("idempotency_key_reused", "Idempotency-Key")
    assert _files(client, api_keys.user) == [first.json()["id"]]


def test_a_retried_batch_create_with_its_key_answers_the_first_batch(
    client: TestClient, api_keys: ApiKeys
) -> None:
    file_id = _upload(client, api_keys.user, "aaa", LINE).json()["id"]
    body = {"input_file_id": file_id, "endpoint": URL, "completion_window": "24h"}
    headers = {**bearer(api_keys.user), "Idempotency-Key": "create-1"}
    first = client.post("/openai/v1/batches", json=body, headers=headers)
    assert first.status_code == 200, first.text
    again = client.post("/openai/v1/batches", json=body, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert _batches(client, api_keys.user) == [first.json()["id"]]
    changed = {**body, "metadata": {"run": "2"}}
    error = _error(client.post("/openai/v1/batches", json=changed, headers=headers), 422)
    assert error["code"] == "idempotency_key_reused"
    assert _batches(client, api_keys.user) == [first.json()["id"]]
    # Without a key, every create is a new batch, as before.
    plain = client.post("/openai/v1/batches", json=body, headers=bearer(api_keys.user))
    assert plain.status_code == 200 and plain.json()["id"] != first.json()["id"]


def test_a_file_part_without_a_filename_says_so(client: TestClient, api_keys: ApiKeys) -> None:
    raw = client.post(
        "/openai/v1/files",
        content=_multipart("xyz", None, LINE),
        headers={**bearer(api_keys.user), "content-type": "multipart/form-data; boundary=xyz"},
    )
    # httpx leaves out an empty filename: the same part.
    empty = client.post(
        "/openai/v1/files",
        files={"file": ("", LINE)},
        data={"purpose": "batch"},
        headers=bearer(api_keys.user),
    )
    for response in (raw, empty):
        error = _error(response, 400)
        assert (error["code"], error["param"]) == ("invalid_value", "file")
        assert "no filename" in error["message"] and "cut short" not in error["message"]
    assert _files(client, api_keys.user) == []


def _completed_batch(client: TestClient, context: ServerContext, key: str) -> dict[str, Any]:
    """A batch run to its end: its one line failed by hand, so it has an error file."""
    file_id = _upload(client, key, "aaa", LINE).json()["id"]
    body = {"input_file_id": file_id, "endpoint": URL, "completion_window": "24h"}
    batch_id = client.post("/openai/v1/batches", json=body, headers=bearer(key)).json()["id"]

    def status() -> str:
        answer = client.get(f"/openai/v1/batches/{batch_id}", headers=bearer(key)).json()
        return str(answer["status"])

    wait_until(lambda: status() == "in_progress", 30, "the driver validates the batch")
    with context.db.write() as conn:
        conn.execute(
            jobs.update()
            .where(jobs.c.batch_id == batch_id)
            .values(status="FAILED", error_message="no", error_type="server_error")
        )
    client.app.state.batch_driver.kick()  # type: ignore[attr-defined]
    wait_until(lambda: status() == "completed", 30, "the driver finalises the batch")
    answer: dict[str, Any] = client.get(
        f"/openai/v1/batches/{batch_id}", headers=bearer(key)
    ).json()
    return answer


def test_an_output_file_as_input_is_400_and_creates_nothing(
    client: TestClient, api_keys: ApiKeys, context: ServerContext
) -> None:
    done = _completed_batch(client, context, api_keys.user)
    body = {"input_file_id": done["error_file_id"], "endpoint": URL, "completion_window": "24h"}
    response = client.post("/openai/v1/batches", json=body, headers=bearer(api_keys.user))
    refused = _error(response, 400)
    assert (refused["code"], refused["param"]) == ("invalid_file", "input_file_id")
    assert "batch_output" in refused["message"]
    assert _batches(client, api_keys.user) == [done["id"]]


def test_cancelling_a_completed_batch_is_400(
    client: TestClient, api_keys: ApiKeys, context: ServerContext
) -> None:
    done = _completed_batch(client, context, api_keys.user)
    cancel = client.post(f"/openai/v1/batches/{done['id']}/cancel", headers=bearer(api_keys.user))
    error = _error(cancel, 400)
    assert error["code"] == "batch_not_cancellable" and "completed" in error["message"]
    answer = client.get(f"/openai/v1/batches/{done['id']}", headers=bearer(api_keys.user))
    assert answer.json()["status"] == "completed"
