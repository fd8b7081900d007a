"""Quotas, rate limits, usage per key, scoped and expiring keys (issue 21).

Everything is driven from outside: keys made with ``openbeepboop-server keys``,
submits over HTTP and through the client, nodes as real processes against the
stand-in LLM. See docs/server.md, "Quotas and rate limits", "Usage per key"
and "Scoped and expiring keys".
"""

from __future__ import annotations

from typing import Any

import httpx
import openbeepboop
import pytest
from cluster import Api, Cluster, Server, parse_json_output
from conftest import Shared
from openbeepboop_schemas import (
    BULK_SUBMIT_PATH,
    CHAT_COMPLETIONS_PATH,
    FETCH_PATH,
    HEARTBEAT_PATH,
    JOBS_PATH,
    METRICS_PATH,
    MODELS_PATH,
    POLL_PATH,
    STATUS_PATH,
    USAGE_PATH,
)
from openbeepboop_testkit.cluster import find_key
from openbeepboop_testkit.processes import wait_until
from openbeepboop_testkit.standin import StandinLLM


def _key(server: Server, role: str, name: str, *flags: str) -> str:
    """``keys create`` with quota, scope or expiry flags; the printed key."""
    return find_key(server.cli("keys", "create", "--role", role, "--name", name, *flags).stdout)


def _chat(model: str, prompt: str = "hello") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}]}


def _unfinished(api: Api) -> int:
    """The key's QUEUED and PROCESSING jobs, counted from its listing."""
    total = 0
    for status in ("QUEUED", "PROCESSING"):
        after = None
        while True:
            params: dict[str, Any] = {"status": status, "limit": 100}
            if after:
                params["after"] = after
            page = api.http.get(JOBS_PATH, params=params).json()
            total += len(page["data"])
            after = page.get("next_after")
            if not after:
                break
    return total


def _assert_429(response: httpx.Response, code: str) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == code, error


def test_max_queued_refuses_past_the_quota_and_stores_nothing(
    cluster: Cluster, shared: Shared, tag: str
) -> None:
    server, model = shared.server, f"{tag}-nobody"
    api = cluster.api(server, _key(server, "USER", f"{tag}-q", "--max-queued", "100"))
    # A node is seen serving the model and takes nothing (the queue is empty):
    # the synchronous chat waits only for a model some node serves.
    seen = httpx.post(
        server.url + FETCH_PATH,
        json={"node_id": f"{tag}-idle", "models": [model], "wait": 0},
        headers={"Authorization": f"Bearer {_key(server, 'NODE', f'{tag}-idle')}"},
    )
    assert seen.json() == [], seen.text
    ids = api.submit_many([f"p{i}" for i in range(100)], model)
    assert _unfinished(api) == 100

    # The 101st job, by every submit path, is a 429 with Retry-After; nothing is stored.
    _assert_429(api.http.post(CHAT_COMPLETIONS_PATH, json=_chat(model)), "max_queued_exceeded")
    _assert_429(
        api.http.post(BULK_SUBMIT_PATH, json={"requests": [_chat(model)]}), "max_queued_exceeded"
    )
    _assert_429(
        api.http.post("/openai/v1/chat/completions", json=_chat(model)), "max_queued_exceeded"
    )
    client = openbeepboop.Client(base_url=server.url, api_key=api.key, max_retries=0)
    with client, pytest.raises(openbeepboop.RateLimitError) as refused:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 429
    assert _unfinished(api) == 100

    # Some finish (cancelled here): submits work again, up to the quota.
    for job_id in ids[:11]:
        assert api.cancel(job_id).status_code == 200
    api.submit("fits again", model)
    assert _unfinished(api) == 90

    # A 150-job bulk at 90 queued is refused whole; a 10-job one fills the quota exactly.
    big = {"requests": [_chat(model, f"b{i}") for i in range(150)]}
    _assert_429(api.http.post(BULK_SUBMIT_PATH, json=big), "max_queued_exceeded")
    assert _unfinished(api) == 90
    api.submit_many([f"f{i}" for i in range(10)], model)
    assert _unfinished(api) == 100

    # keys list shows the quota; keys update lifts it and the next submit passes.
    listed = [json_line for json_line in server.cli("keys", "list", "--json").stdout.splitlines()]
    mine = [parse_json_output(line) for line in listed if f'"{tag}-q"' in line]
    assert mine[0]["max_queued"] == 100 and mine[0]["rate_limit"] is None
    server.cli("keys", "update", f"{tag}-q", "--max-queued", "none")
    api.submit("unlimited now", model)


def test_a_burst_past_the_rate_limit_gets_429s_and_stores_nothing(
    cluster: Cluster, shared: Shared, tag: str
) -> None:
    server, model = shared.server, f"{tag}-nobody"
    # 3 per minute: one every 20 s, so the burst below cannot earn a fresh one.
    api = cluster.api(server, _key(server, "USER", f"{tag}-r", "--rate-limit", "3"))
    answers = [api.http.post(CHAT_COMPLETIONS_PATH, json=_chat(model, f"{i}")) for i in range(8)]
    accepted = [answer for answer in answers if answer.status_code == 202]
    refused = [answer for answer in answers if answer.status_code != 202]
    assert 3 <= len(accepted) <= 4, [answer.status_code for answer in answers]
    for answer in refused:
        _assert_429(answer, "rate_limit_exceeded")
    bulk = api.http.post(BULK_SUBMIT_PATH, json={"requests": [_chat(model)] * 5})
    _assert_429(bulk, "rate_limit_exceeded")
    assert _unfinished(api) == len(accepted)
    assert "rate=3/min" in server.cli("keys", "list").stdout

    server.cli("keys", "update", f"{tag}-r", "--rate-limit", "none")
    api.submit("no limit now", model)


def _usage(response: httpx.Response) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {entry["key"]: entry for entry in response.json()["data"]}


def test_usage_reports_the_jobs_and_tokens_the_standin_returned(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str
) -> None:
    server, model = shared.server, f"{tag}-m"
    name, other_name = f"{tag}-spender", f"{tag}-other"
    key = _key(server, "USER", name)
    api, other = cluster.api(server, key), cluster.api(server, _key(server, "USER", other_name))
    node = cluster.node(server, shared.node_key, f"{tag}-n", model, "openai/m", llm.base_url)
    node.run()
    prompts = [" ".join(["word"] * (i + 1)) for i in range(6)]
    ids = api.submit_many(prompts, model)
    done = api.wait_terminal(ids)
    assert {entry["status"] for entry in done.values()} == {"COMPLETED"}
    prompt_tokens = sum(entry["result"]["usage"]["prompt_tokens"] for entry in done.values())
    completion_tokens = sum(
        entry["result"]["usage"]["completion_tokens"] for entry in done.values()
    )
    assert prompt_tokens > 0 and completion_tokens > 0
    cancelled = api.submit("never served", f"{tag}-nobody")
    assert api.cancel(cancelled).status_code == 200

    expected = {
        "completed": 6,
        "failed": 0,
        "cancelled": 1,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    mine = _usage(api.http.get(USAGE_PATH))
    assert list(mine) == [name]
    assert {field: mine[name][field] for field in expected} == expected
    assert mine[name]["llm_seconds"] > 0

    # Both command lines say the same.
    served = parse_json_output(server.cli("usage", "--key", name, "--json").stdout)
    assert {field: served["data"][0][field] for field in expected} == expected
    config = cluster.client_config(server, key, "spender")
    client_side = parse_json_output(
        cluster.client("usage", "--json", "--config", str(config)).stdout
    )
    assert {field: client_side["data"][0][field] for field in expected} == expected

    # A USER key cannot see another key's usage; its own is empty.
    refused = other.http.get(USAGE_PATH, params={"key": name})
    assert refused.status_code == 403 and refused.json()["error"]["message"]
    theirs = _usage(other.http.get(USAGE_PATH))
    assert list(theirs) == [other_name] and theirs[other_name]["completed"] == 0
    # ADMIN sees both; a window in the future holds nothing.
    admin = cluster.api(server, server.admin_key)
    everyone = _usage(admin.http.get(USAGE_PATH))
    assert everyone[name]["completed"] == 6 and other_name in everyone
    later = _usage(admin.http.get(USAGE_PATH, params={"key": name, "since": "2999-01-01"}))
    assert later[name]["completed"] == 0
    # Prometheus counters by key name.
    metrics = admin.http.get(METRICS_PATH).text
    assert f'openbeepboop_key_jobs_total{{key="{name}",status="COMPLETED"}} 6.0' in metrics
    assert f'openbeepboop_key_tokens_total{{key="{name}",kind="prompt"}} {prompt_tokens}.0' in (
        metrics
    )
    node.stop()


def test_a_model_scoped_node_key_is_refused_at_start(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str
) -> None:
    server = shared.server
    key = _key(server, "NODE", f"{tag}-scoped", "--models", f"{tag}-allowed")
    node = cluster.node(
        server, key, f"{tag}-n", f"{tag}-other", "openai/m", llm.base_url, more=("--no-check",)
    )
    node.run()
    status = node._started().wait(timeout=120)
    assert status != 0
    log = node._started().log_text()
    assert "Traceback" not in log
    assert "outside its scope" in log and f"{tag}-other" in log


def test_node_id_scope_and_ownership(cluster: Cluster, shared: Shared, tag: str) -> None:
    server, node_id = shared.server, f"{tag}-box"
    bound = cluster.api(server, _key(server, "NODE", f"{tag}-bound", "--node-id", node_id))
    stranger = cluster.api(server, _key(server, "NODE", f"{tag}-stranger"))
    fetch = {"node_id": node_id, "models": [f"{tag}-m"]}

    assert bound.http.post(FETCH_PATH, json=fetch).status_code == 200
    wrong_id = bound.http.post(FETCH_PATH, json={**fetch, "node_id": f"{tag}-elsewhere"})
    assert wrong_id.status_code == 403 and "node_id" in wrong_id.json()["error"]["message"]
    # The id belongs to the bound key: another key acting under it gets 409, whatever it sends.
    for path, body in ((FETCH_PATH, fetch), (HEARTBEAT_PATH, {"node_id": node_id, "leases": []})):
        taken = stranger.http.post(path, json=body)
        assert taken.status_code == 409, taken.text
        assert taken.json()["error"]["code"] == "node_id_taken"

    # Unscoped keys: a live node's id is its key's; a second key gets 409.
    first = cluster.api(server, shared.node_key)
    twin = {"node_id": f"{tag}-twin", "models": [f"{tag}-m"]}
    assert first.http.post(FETCH_PATH, json=twin).status_code == 200
    second = stranger.http.post(FETCH_PATH, json=twin)
    assert second.status_code == 409 and "live node" in second.json()["error"]["message"]


def test_a_metrics_key_reads_metrics_and_status_only(
    cluster: Cluster, shared: Shared, tag: str
) -> None:
    server = shared.server
    watcher = cluster.api(server, _key(server, "METRICS", f"{tag}-watch"))
    assert watcher.http.get(METRICS_PATH).status_code == 200
    assert watcher.http.get(STATUS_PATH).status_code == 200
    model = f"{tag}-m"
    forbidden = [
        ("POST", CHAT_COMPLETIONS_PATH, _chat(model)),
        ("POST", BULK_SUBMIT_PATH, {"requests": [_chat(model)]}),
        ("POST", POLL_PATH, {"ids": ["job-x"]}),
        ("GET", JOBS_PATH, None),
        ("GET", f"{JOBS_PATH}/job-x", None),
        ("POST", f"{JOBS_PATH}/job-x/cancel", None),
        ("GET", MODELS_PATH, None),
        ("GET", USAGE_PATH, None),
        ("POST", FETCH_PATH, {"node_id": f"{tag}-n", "models": [model]}),
        ("POST", HEARTBEAT_PATH, {"node_id": f"{tag}-n", "leases": []}),
        ("POST", "/openai/v1/chat/completions", _chat(model)),
        ("GET", "/openai/v1/models", None),
        ("GET", "/openai/v1/files", None),
        ("GET", "/openai/v1/batches", None),
    ]
    for method, path, body in forbidden:
        response = watcher.http.request(method, path, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["type"] == "permission_error"


def test_an_expired_key_is_refused_like_a_revoked_one(
    cluster: Cluster, shared: Shared, tag: str
) -> None:
    server, name, model = shared.server, f"{tag}-temp", f"{tag}-m"
    api = cluster.api(server, _key(server, "USER", name, "--expires", "30d"))
    job_id = api.submit("while valid", model)
    # An expiry in the past is refused: the key is given one two seconds ahead.
    server.cli("keys", "update", name, "--expires", "2s")

    wait_until(lambda: api.get(job_id).status_code == 401, 30, "the key to expire")
    refused = api.http.post(CHAT_COMPLETIONS_PATH, json=_chat(model))
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert "expired" in server.cli("keys", "list").stdout
