"""The user endpoints end to end through the app: submit, bulk, get, list, cancel, models."""

from __future__ import annotations

import pytest
from openbeepboop_schemas import BULK_SUBMIT_PATH, BulkSubmitResponse, Job, JobList, PollEntry
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys, bearer, chat


def _submit(client: TestClient, key: str, **body: object) -> Job:
    response = client.post("/v1/chat/completions", json=chat(**body), headers=bearer(key))
    assert response.status_code == 202, response.text
    return Job.model_validate(response.json())


def test_submit_answers_202_with_the_job(client: TestClient, api_keys: ApiKeys) -> None:
    response = client.post(
        "/v1/chat/completions", json=chat("llama3"), headers=bearer(api_keys.user)
    )
    assert response.status_code == 202
    body = response.json()
    assert set(body) >= {"id", "object", "status", "model", "created_at"}
    assert body["id"].startswith("job-")
    assert body["object"] == "job"
    assert body["status"] == "QUEUED"
    assert body["model"] == "llama3"
    assert response.headers["x-request-id"].startswith("req_")


def test_idempotency_key_returns_the_first_job(client: TestClient, api_keys: ApiKeys) -> None:
    headers = {**bearer(api_keys.user), "Idempotency-Key": "retry-1"}
    first = client.post("/v1/chat/completions", json=chat(), headers=headers).json()
    second = client.post("/v1/chat/completions", json=chat(), headers=headers).json()
    assert first["id"] == second["id"]
    other = client.post(
        "/v1/chat/completions",
        json=chat(),
        headers={**bearer(api_keys.other_user), "Idempotency-Key": "retry-1"},
    ).json()
    assert other["id"] != first["id"]
    listed = JobList.model_validate(client.get("/v1/jobs", headers=bearer(api_keys.user)).json())
    assert [entry.id for entry in listed.data] == [first["id"]]


def test_bulk_submit_keeps_order_and_is_idempotent(client: TestClient, api_keys: ApiKeys) -> None:
    body = {"requests": [chat("a"), chat("b"), chat("c")]}
    headers = {**bearer(api_keys.user), "Idempotency-Key": "bulk-1"}
    response = client.post(BULK_SUBMIT_PATH, json=body, headers=headers)
    assert response.status_code == 202
    jobs = BulkSubmitResponse.model_validate(response.json()).data
    assert [job.model for job in jobs] == ["a", "b", "c"]
    again = BulkSubmitResponse.model_validate(
        client.post(BULK_SUBMIT_PATH, json=body, headers=headers).json()
    ).data
    assert [job.id for job in again] == [job.id for job in jobs]


def test_an_idempotency_key_sent_with_another_request_is_422(
    client: TestClient, api_keys: ApiKeys
) -> None:
    headers = {**bearer(api_keys.user), "Idempotency-Key": "once"}
    first = client.post("/v1/chat/completions", json=chat("a"), headers=headers)
    assert first.status_code == 202
    for path, body in (
        ("/v1/chat/completions", chat("b")),
        (BULK_SUBMIT_PATH, {"requests": [chat("a"), chat("a")]}),
    ):
        refused = client.post(path, json=body, headers=headers)
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == ("idempotency_key_reused", "Idempotency-Key")
        assert refused.headers["x-should-retry"] == "false"
    listed = JobList.model_validate(client.get("/v1/jobs", headers=bearer(api_keys.user)).json())
    assert [entry.id for entry in listed.data] == [first.json()["id"]]


def test_get_and_poll_show_the_job(client: TestClient, api_keys: ApiKeys) -> None:
    job = _submit(client, api_keys.user)
    entry = PollEntry.model_validate(
        client.get(f"/v1/jobs/{job.id}", headers=bearer(api_keys.user)).json()
    )
    assert (entry.id, entry.status, entry.completed, entry.result) == (
        job.id,
        "QUEUED",
        False,
        None,
    )
    polled = client.post(
        "/v1/results/poll",
        json={"ids": ["job-missing", job.id, "job-missing", job.id]},
        headers=bearer(api_keys.user),
    ).json()
    # A repeated id is answered once, where it was first named.
    assert [item["id"] for item in polled] == ["job-missing", job.id]
    assert [item["status"] for item in polled] == ["NOT_FOUND", "QUEUED"]
    # ADMIN sees everyone's jobs.
    assert client.get(f"/v1/jobs/{job.id}", headers=bearer(api_keys.admin)).status_code == 200


def test_list_is_newest_first_filtered_and_paged(client: TestClient, api_keys: ApiKeys) -> None:
    ids = [_submit(client, api_keys.user, content=str(n)).id for n in range(5)]
    cancelled = ids[1]
    client.post(f"/v1/jobs/{cancelled}/cancel", headers=bearer(api_keys.user))
    _submit(client, api_keys.other_user)

    seen: list[str] = []
    after: str | None = None
    while True:
        query = "limit=2" + (f"&after={after}" if after else "")
        page = JobList.model_validate(
            client.get(f"/v1/jobs?{query}", headers=bearer(api_keys.user)).json()
        )
        assert len(page.data) <= 2
        seen += [entry.id for entry in page.data]
        if not page.has_more:
            break
        after = page.next_after
    assert seen == list(reversed(ids))

    only = JobList.model_validate(
        client.get("/v1/jobs?status=CANCELLED", headers=bearer(api_keys.user)).json()
    )
    assert [entry.id for entry in only.data] == [cancelled]
    default = client.get("/v1/jobs", headers=bearer(api_keys.admin)).json()
    assert len(default["data"]) == 6


def test_cancel_queued_job(client: TestClient, api_keys: ApiKeys) -> None:
    job = _submit(client, api_keys.user)
    response = client.post(f"/v1/jobs/{job.id}/cancel", headers=bearer(api_keys.user))
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELLED"
    # Cancelling again is harmless and answers the same terminal state.
    again = client.post(f"/v1/jobs/{job.id}/cancel", headers=bearer(api_keys.user))
    assert again.json()["status"] == "CANCELLED"


def test_models_lists_what_recent_nodes_serve(client: TestClient, api_keys: ApiKeys) -> None:
    empty = client.get("/v1/models", headers=bearer(api_keys.user)).json()
    assert empty == {"object": "list", "data": [], "any_model_nodes": 0}
    client.post(
        "/internal/queue/fetch",
        json={"node_id": "gpu-1", "models": ["llama3", "*", "qwen"]},
        headers=bearer(api_keys.node),
    )
    models = client.get("/v1/models", headers=bearer(api_keys.user)).json()
    assert models["object"] == "list"
    assert sorted(card["id"] for card in models["data"]) == ["llama3", "qwen"]
    assert all(card["object"] == "model" for card in models["data"])


@pytest.mark.parametrize("limit", [1, 100])
def test_limit_bounds_are_accepted(client: TestClient, api_keys: ApiKeys, limit: int) -> None:
    assert client.get(f"/v1/jobs?limit={limit}", headers=bearer(api_keys.user)).status_code == 200
