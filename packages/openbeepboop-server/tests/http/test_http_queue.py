"""The node endpoints through the app: fetch, deliver, heartbeat, and what users then see."""

from __future__ import annotations

from openbeepboop_schemas import HeartbeatResponse, Lease, SubmitResponse
from openbeepboop_server.context import ServerContext
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys, bearer, chat, completion


def _fetch(client: TestClient, key: str, models: list[str], **extra: object) -> list[Lease]:
    response = client.post(
        "/internal/queue/fetch",
        json={"node_id": "node-1", "models": models, **extra},
        headers=bearer(key),
    )
    assert response.status_code == 200, response.text
    return [Lease.model_validate(item) for item in response.json()]


def test_fetch_routes_by_model_and_returns_the_request_as_sent(
    client: TestClient, api_keys: ApiKeys
) -> None:
    body = chat("llama3", temperature=1, top_p=0.5)
    job = client.post("/v1/chat/completions", json=body, headers=bearer(api_keys.user)).json()
    assert _fetch(client, api_keys.node, ["qwen"]) == []
    response = client.post(
        "/internal/queue/fetch",
        json={"node_id": "node-1", "models": ["llama3"]},
        headers=bearer(api_keys.node),
    )
    leases = response.json()
    assert [lease["job_id"] for lease in leases] == [job["id"]]
    # Exactly what the user sent: no defaults added, 1 stays 1.
    assert leases[0]["request"] == body
    assert _fetch(client, api_keys.node, ["*"]) == []


def test_result_completes_the_job(client: TestClient, api_keys: ApiKeys) -> None:
    job = client.post("/v1/chat/completions", json=chat(), headers=bearer(api_keys.user)).json()
    [lease] = _fetch(client, api_keys.node, ["llama3"])
    beat = HeartbeatResponse.model_validate(
        client.post(
            "/internal/queue/heartbeat",
            json={
                "node_id": "node-1",
                "leases": [{"job_id": lease.job_id, "lease_token": lease.lease_token}],
            },
            headers=bearer(api_keys.node),
        ).json()
    )
    assert beat.extended == [job["id"]]
    outcome = {
        "kind": "result",
        "job_id": lease.job_id,
        "lease_token": lease.lease_token,
        "result": completion("Rust is safe."),
    }
    acks = SubmitResponse.model_validate(
        client.post(
            "/internal/queue/submit",
            json={"node_id": "node-1", "outcomes": [outcome, outcome]},
            headers=bearer(api_keys.node),
        ).json()
    ).acks
    assert [ack.ack for ack in acks] == ["accepted", "duplicate"]
    [entry] = client.post(
        "/v1/results/poll", json={"ids": [job["id"]]}, headers=bearer(api_keys.user)
    ).json()
    assert entry["status"] == "COMPLETED"
    assert entry["completed"] is True
    assert entry["result"] == completion("Rust is safe.")
    assert entry["error"] is None


def test_entries_name_the_node_only_while_it_works(client: TestClient, api_keys: ApiKeys) -> None:
    job = client.post("/v1/chat/completions", json=chat(), headers=bearer(api_keys.user)).json()

    def entries() -> list[dict]:
        polled = client.post(
            "/v1/results/poll", json={"ids": [job["id"]]}, headers=bearer(api_keys.user)
        ).json()
        got = client.get(f"/v1/jobs/{job['id']}", headers=bearer(api_keys.user)).json()
        listed = client.get("/v1/jobs", headers=bearer(api_keys.user)).json()["data"]
        return [*polled, got, *listed]

    assert all("node_id" not in entry for entry in entries())  # QUEUED: nobody has it
    [lease] = _fetch(client, api_keys.node, ["llama3"])
    assert [entry["node_id"] for entry in entries()] == ["node-1"] * 3
    outcome = {
        "kind": "result",
        "job_id": lease.job_id,
        "lease_token": lease.lease_token,
        "result": completion(),
    }
    client.post(
        "/internal/queue/submit",
        json={"node_id": "node-1", "outcomes": [outcome]},
        headers=bearer(api_keys.node),
    )
    assert all("node_id" not in entry for entry in entries())  # finished: history, left out


def test_permanent_error_fails_and_retryable_requeues(
    client: TestClient, api_keys: ApiKeys
) -> None:
    first = client.post(
        "/v1/chat/completions", json=chat("m1"), headers=bearer(api_keys.user)
    ).json()
    second = client.post(
        "/v1/chat/completions", json=chat("m2"), headers=bearer(api_keys.user)
    ).json()
    leases = {lease.job_id: lease for lease in _fetch(client, api_keys.node, ["*"], max_jobs=5)}
    outcomes = [
        {
            "kind": "error",
            "job_id": first["id"],
            "lease_token": leases[first["id"]].lease_token,
            "error": {"message": "unknown model", "type": "bad_request", "retryable": False},
        },
        {
            "kind": "error",
            "job_id": second["id"],
            "lease_token": leases[second["id"]].lease_token,
            "error": {"message": "timed out", "type": "timeout", "retryable": True},
        },
    ]
    client.post(
        "/internal/queue/submit",
        json={"node_id": "node-1", "outcomes": outcomes},
        headers=bearer(api_keys.node),
    )
    entries = client.post(
        "/v1/results/poll", json={"ids": [first["id"], second["id"]]}, headers=bearer(api_keys.user)
    ).json()
    assert entries[0]["status"] == "FAILED"
    assert entries[0]["error"] == {"message": "unknown model", "type": "bad_request"}
    assert entries[1]["status"] == "QUEUED"
    assert entries[1]["attempts"] == 1


def test_expired_lease_is_reaped_in_the_background(
    client: TestClient, api_keys: ApiKeys, context: ServerContext
) -> None:
    import time

    job = client.post("/v1/chat/completions", json=chat(), headers=bearer(api_keys.user)).json()
    [lease] = _fetch(client, api_keys.node, ["llama3"])
    # Shorten the lease in the database, as if the node had died long ago.
    import sqlalchemy as sa

    with context.db.write() as conn:
        conn.execute(
            sa.text("UPDATE jobs SET lease_expires_at = :t WHERE id = :id"),
            {"t": time.time() - 1, "id": lease.job_id},
        )
    deadline = time.monotonic() + 30
    status = "PROCESSING"
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job['id']}", headers=bearer(api_keys.user)).json()["status"]
        if status == "QUEUED":
            break
        time.sleep(0.05)
    assert status == "QUEUED"
    metrics = client.get("/metrics", headers=bearer(api_keys.admin)).text
    assert "openbeepboop_lease_expiries_total 1.0" in metrics


def test_absurd_token_counts_are_clamped_and_the_totals_saturate(
    client: TestClient, api_keys: ApiKeys
) -> None:
    from openbeepboop_server.queue.usage import TOKEN_CEILING

    jobs = [
        client.post("/v1/chat/completions", json=chat(), headers=bearer(api_keys.user)).json()
        for _ in range(3)
    ]
    leases = _fetch(client, api_keys.node, ["llama3"], max_jobs=3)
    absurd = completion("big")
    absurd["usage"] = {"prompt_tokens": 10**20, "completion_tokens": -5, "total_tokens": 10**20}
    huge = completion("huger")
    huge["usage"] = {"prompt_tokens": 2**63 - 1, "completion_tokens": 2**64, "total_tokens": 1}

    def deliver(lease: Lease, result: dict[str, object]) -> None:
        outcome = {
            "kind": "result",
            "job_id": lease.job_id,
            "lease_token": lease.lease_token,
            "result": result,
        }
        response = client.post(
            "/internal/queue/submit",
            json={"node_id": "node-1", "outcomes": [outcome]},
            headers=bearer(api_keys.node),
        )
        assert response.status_code == 200, response.text
        assert [ack["ack"] for ack in response.json()["acks"]] == ["accepted"]

    # The result is stored as delivered; only the accounting is bounded, and a
    # later delivery of the same key (same hour) is not refused by its total.
    deliver(leases[0], absurd)
    deliver(leases[1], huge)
    deliver(leases[2], completion())
    entries = client.post(
        "/v1/results/poll", json={"ids": [job["id"] for job in jobs]}, headers=bearer(api_keys.user)
    ).json()
    by_id = {entry["id"]: entry for entry in entries}
    results = {lease.job_id: by_id[lease.job_id] for lease in leases}
    assert [results[lease.job_id]["status"] for lease in leases] == ["COMPLETED"] * 3
    assert results[leases[0].job_id]["result"] == absurd
    assert results[leases[1].job_id]["result"] == huge

    usage = client.get("/v1/usage", headers=bearer(api_keys.user))
    assert usage.status_code == 200, usage.text
    [row] = usage.json()["data"]
    assert row["completed"] == 3
    assert row["prompt_tokens"] == TOKEN_CEILING  # saturated, not overflowed
    assert row["completion_tokens"] == TOKEN_CEILING  # -5 counts as 0; 2**64 clamps
    assert row["total_tokens"] == 2 * TOKEN_CEILING
    metrics = client.get("/metrics", headers=bearer(api_keys.admin))
    assert metrics.status_code == 200
