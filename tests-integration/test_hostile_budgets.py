"""Hostile and careless input against a real server process (issue 18, server side).

Poison bodies are refused without stalling anyone else; a result larger than
any request is delivered and read whole, one over the results limit is
answered with ``413 result_too_large`` and then fails the job visibly; a
poll naming one id a thousand times answers it once.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
from cluster import Api, Cluster
from conftest import Shared
from openbeepboop_schemas import (
    CHAT_COMPLETIONS_PATH,
    FETCH_PATH,
    POLL_PATH,
    QUEUE_SUBMIT_PATH,
    RESULT_TOO_LARGE,
    job_cancel_path,
)

#: The server's default request limit (10 MB) and results limit (32 MB).
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_RESULT_BYTES = 32 * 1024 * 1024
#: What other requests may wait while poison bodies are being refused. The
#: stall this guards against is 2.5 s per poison body on the fastest host we
#: have run on, and longer on slower ones; the parsing the storm does anyway
#: (the accepted 10 MB body) holds the interpreter for up to ~130 ms on a host
#: three times slower. Half a second tells the two apart on either.
HEALTHZ_BUDGET_SECONDS = 0.5
#: Storms sent at most, until one passes (see the poison test).
STORMS = 3


def _empty_parts_body(model: str) -> bytes:
    """~10 MB of millions of empty content parts: once 2.5 s of the event loop."""
    head = b'{"model":"' + model.encode() + b'","messages":[{"role":"user","content":['
    count = (MAX_BODY_BYTES - len(head) - 64) // 3
    return head + b",".join([b"{}"] * count) + b"]}]}"


def _widest_accepted_body(model: str) -> bytes:
    """~10 MB that passes every budget: as many values as allowed, each a long string."""
    values = 190_000
    filler = "v" * ((MAX_BODY_BYTES - 1_000) // values - 4)
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"wide": [filler] * values},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _storm(url: str, key: str, bodies: list[bytes]) -> tuple[list[httpx.Response], list[float]]:
    """Send ``bodies`` at once; time ``/healthz`` again and again until all are answered."""
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def send(body: bytes) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            response = client.post(CHAT_COMPLETIONS_PATH, content=body, headers=_headers(key))
        with lock:
            answers.append(response)

    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as health:
        assert health.get("/healthz").status_code == 200  # connection open before the storm
        senders = [threading.Thread(target=send, args=(body,)) for body in bodies]
        for sender in senders:
            sender.start()
        while any(sender.is_alive() for sender in senders) or len(latencies) < 20:
            started = time.perf_counter()
            assert health.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
        for sender in senders:
            sender.join()
    return answers, latencies


def _cancel_accepted(url: str, key: str, answers: list[httpx.Response]) -> None:
    """Cancel the jobs a storm queued: nobody serves their model on the shared server."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        for response in answers:
            if response.status_code == 202:
                cancelled = client.post(job_cancel_path(response.json()["id"]))
                assert cancelled.json()["status"] == "CANCELLED", cancelled.text


def test_poison_bodies_are_refused_while_healthz_stays_fast(shared: Shared, tag: str) -> None:
    """Three poison bodies and the widest accepted one at once; ``/healthz`` stays under 0.5 s.

    A stall of the event loop (what this guards against: 2.5 s per poison
    body once) shows in every storm. A machine shared with other work can
    delay one call by itself, so the storm is sent up to three times and one
    storm entirely under the budget is the pass.
    """
    url, key = shared.server.url, shared.user_key
    poison = _empty_parts_body(f"{tag}-m")
    widest = _widest_accepted_body(f"{tag}-m")
    assert len(poison) <= MAX_BODY_BYTES and len(widest) <= MAX_BODY_BYTES
    slowest: list[float] = []
    for _ in range(STORMS):
        answers, latencies = _storm(url, key, [poison, poison, widest, poison])
        statuses = sorted(response.status_code for response in answers)
        assert statuses == [202, 400, 400, 400], [response.text[:300] for response in answers]
        for response in answers:
            if response.status_code == 400:
                error = response.json()["error"]
                assert error["code"] == "request_budget_exceeded"
                assert "[limits] max_json_values = 200000" in error["message"]
        _cancel_accepted(url, key, answers)
        slowest.append(max(latencies))
        if slowest[-1] < HEALTHZ_BUDGET_SECONDS:
            break
    print(f"/healthz: slowest call per storm {[round(s * 1000, 1) for s in slowest]} ms")
    assert min(slowest) < HEALTHZ_BUDGET_SECONDS, (
        f"/healthz took over {HEALTHZ_BUDGET_SECONDS * 1000:.0f} ms in every storm: "
        f"slowest {[round(s * 1000) for s in slowest]} ms"
    )


def _completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-big",
        "object": "chat.completion",
        "created": 1_767_225_600,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }


class _SyntheticNode:
    """A node speaking the queue protocol over HTTP, to deliver what a real one could not."""

    def __init__(self, url: str, key: str, node_id: str) -> None:
        self.node_id = node_id
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )

    def claim(self, model: str) -> dict[str, Any]:
        body = {"node_id": self.node_id, "models": [model], "wait": 5}
        response = self.http.post(FETCH_PATH, json=body)
        assert response.status_code == 200, response.text
        [lease] = response.json()
        return dict(lease)

    def deliver(self, lease: dict[str, Any], outcome: dict[str, Any]) -> httpx.Response:
        ref = {"job_id": lease["job_id"], "lease_token": lease["lease_token"]}
        body = {"node_id": self.node_id, "outcomes": [{**ref, **outcome}]}
        return self.http.post(QUEUE_SUBMIT_PATH, content=json.dumps(body).encode())


def _claimed_job(
    cluster: Cluster, shared: Shared, tag: str
) -> tuple[Api, _SyntheticNode, str, dict[str, Any]]:
    """A user's job, claimed by a synthetic node: the user's API, the node, the job, its lease."""
    model = f"{tag}-m"
    api = cluster.api(shared.server, shared.user_key)
    node = _SyntheticNode(shared.server.url, shared.node_key, f"{tag}-node")
    job = api.submit("write a lot", model)
    return api, node, job, node.claim(model)


def test_an_11_mb_result_is_delivered_and_read_back_whole(
    cluster: Cluster, shared: Shared, tag: str
) -> None:
    api, node, job, lease = _claimed_job(cluster, shared, tag)
    content = "eleven megabytes " * (11 * 1024 * 1024 // 17)
    assert len(content) > MAX_BODY_BYTES
    response = node.deliver(lease, {"kind": "result", "result": _completion(content)})
    assert response.status_code == 200, response.text
    assert response.json()["acks"][0]["ack"] == "accepted"
    [entry] = api.poll([job])
    assert entry["status"] == "COMPLETED"
    assert entry["result"]["choices"][0]["message"]["content"] == content


def test_a_result_over_the_results_limit_fails_the_job_visibly(
    cluster: Cluster, shared: Shared, tag: str
) -> None:
    api, node, job, lease = _claimed_job(cluster, shared, tag)
    huge = _completion("x" * (MAX_RESULT_BYTES + 1024 * 1024))
    response = node.deliver(lease, {"kind": "result", "result": huge})
    assert response.status_code == 413, response.text[:300]
    assert response.json()["error"]["code"] == RESULT_TOO_LARGE
    # What the 413 asks a node to do instead: a permanent error of that type.
    error = {"message": "the result is larger than the server accepts", "type": RESULT_TOO_LARGE}
    response = node.deliver(lease, {"kind": "error", "error": {**error, "retryable": False}})
    assert response.json()["acks"][0]["ack"] == "accepted"
    [entry] = api.poll([job])
    assert entry["status"] == "FAILED"
    assert entry["error"]["type"] == RESULT_TOO_LARGE


def test_a_poll_of_one_id_repeated_answers_once(cluster: Cluster, shared: Shared, tag: str) -> None:
    api = cluster.api(shared.server, shared.user_key)
    job = api.submit("once", f"{tag}-m")
    response = api.http.post(POLL_PATH, json={"ids": [job] * 1_000})
    assert response.status_code == 200, response.text
    assert [entry["id"] for entry in response.json()] == [job]
