"""One job cannot hurt a node or reach its network; nothing is lost to size or a bad spool row.

Issue 18, the node's side, each from outside: real server and node
processes, the stand-in LLM, and for media URLs a capture server that
records any request made to it.
"""

from __future__ import annotations

import http.server
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w
from cluster import Api, Cluster, Node
from conftest import Shared
from openbeepboop_schemas import FETCH_PATH, ResultOutcome
from openbeepboop_testkit.processes import wait_until
from openbeepboop_testkit.standin import StandinLLM

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: A provider for which LiteLLM downloads an image_url itself and sends the bytes on.
DOWNLOADING_PROVIDER = "anthropic/claude-3-5-haiku-20241022"


def edit_node(node: Node, models: list[dict[str, Any]] | None = None, **settings: Any) -> None:
    """Change the node's config file (top-level settings; more ``[[models]]``)."""
    data = tomllib.loads(node.config.read_text())
    data.update(settings)
    if models:
        data["models"].extend(models)
    node.config.write_text(tomli_w.dumps(data))


class Capture(http.server.BaseHTTPRequestHandler):
    """Answers anything with a tiny PNG, and records that it was asked."""

    requests: list[str] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(b"\x89PNG\r\n\x1a\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[str]:
    Capture.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def downloading_node(cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str) -> Node:
    """A node whose model's provider would download media URLs (setup cannot check it)."""
    return cluster.node(
        shared.server,
        shared.node_key,
        f"{tag}-node",
        f"{tag}-m",
        DOWNLOADING_PROVIDER,
        llm.base_url,
        more=["--no-check"],
    )


def image_job(text: str, url: str) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


def test_media_urls_never_reach_the_nodes_network_and_errors_are_clean(
    cluster: Cluster, shared: Shared, llm: StandinLLM, capture: str, tag: str
) -> None:
    model, open_model = f"{tag}-m", f"{tag}-media"
    api = cluster.api(shared.server, shared.user_key)
    node = downloading_node(cluster, shared, llm, tag)
    # A second model whose operator allows media URLs: public addresses only.
    edit_node(
        node,
        models=[
            {
                "name": open_model,
                "litellm_model": DOWNLOADING_PROVIDER,
                "api_base": llm.base_url,
                "allow_media_urls": True,
            }
        ],
    )
    node.run()
    refused = api.submit("x", model, messages=image_job("what is it?", capture + "/a.png"))
    private = api.submit("x", open_model, messages=image_job("and this?", capture + "/b.png"))
    # LiteLLM refuses to build this request, raising with a traceback in its message.
    unbuildable = api.submit(
        "x", model, messages=[{"role": "user", "content": [{"type": "bogus"}]}]
    )

    done = api.wait_terminal([refused, private, unbuildable])

    assert done[refused]["status"] == "FAILED", done[refused]
    assert done[refused]["error"]["type"] == "media_url_refused"
    assert "media URLs are not allowed for this model" in done[refused]["error"]["message"]
    assert done[private]["status"] == "FAILED", done[private]
    assert "non-public address" in done[private]["error"]["message"]
    assert Capture.requests == []
    # Errors from the request itself are permanent: one attempt, nothing paid twice.
    assert [done[j]["attempts"] for j in (refused, private, unbuildable)] == [1, 1, 1]
    assert done[unbuildable]["status"] == "FAILED", done[unbuildable]
    message = done[unbuildable]["error"]["message"]
    assert "Traceback" not in message and "/" not in message, message
    assert "Invalid user message" in message
    assert llm.calls() == []


def _too_large_for_small_limits(
    cluster: Cluster, llm: StandinLLM, tag: str
) -> tuple[Api, Node, str, str]:
    """A server whose results limit a 400 KB answer exceeds, a node, and two jobs.

    Requests up to 150 KB, results up to 200 KB (the deliver route takes that
    plus 64 KB of envelope). Returns the user's API, the node (not started),
    the job whose result is too large and a small one.
    """
    server, model = cluster.server(), f"{tag}-m"
    server.edit_config("server", max_body_bytes=150_000)
    server.edit_config("limits", max_result_bytes=200_000)
    server.start()
    api = cluster.api(server, server.create_key("USER", f"{tag}-user"))
    node_key = server.create_key("NODE", f"{tag}-nodes")
    node = cluster.node(server, node_key, f"{tag}-node", model, "openai/m", llm.base_url)
    prompt = "word " * 20_000  # 100 KB in, echoed 4 times: 400 KB out, over the results limit
    # A max_tokens of its own: the node's default (1,024) would cut the echo short.
    big = api.submit(prompt, model, n=4, max_tokens=50_000)
    small = api.submit("small", model)
    return api, node, big, small


def test_a_result_over_the_servers_limit_fails_visibly_as_result_too_large(
    cluster: Cluster, llm: StandinLLM, tag: str
) -> None:
    api, node, big, small = _too_large_for_small_limits(cluster, llm, tag)
    node.run()

    done = api.wait_terminal([big, small])

    assert done[small]["status"] == "COMPLETED", done[small]
    failed = done[big]
    assert failed["status"] == "FAILED", failed
    assert failed["error"]["type"] == "result_too_large"
    assert "more than the server accepts" in failed["error"]["message"]
    assert failed["attempts"] == 1
    assert len([call for call in llm.calls() if call.body.get("n") == 4]) == 1  # not re-run


def test_batch_counts_and_logs_a_result_too_large_as_the_failure_it_became(
    cluster: Cluster, llm: StandinLLM, tag: str
) -> None:
    # The server refuses the result (413); the node delivers a failure instead,
    # so its job line and its last line must say failed, never "completed".
    api, node, big, small = _too_large_for_small_limits(cluster, llm, tag)

    batch = node.batch()

    done = api.wait_terminal([big, small])
    assert done[big]["status"] == "FAILED", done[big]
    assert done[big]["error"]["type"] == "result_too_large"
    assert done[small]["status"] == "COMPLETED", done[small]
    # A job that failed is the batch's work done (docs/node.md, "Batch mode (cron)").
    assert batch.returncode == 0, batch.stderr
    lines = batch.stderr.splitlines()
    big_lines = [line for line in lines if f"job {big} " in line]
    assert len(big_lines) == 1, big_lines
    assert "failed (result_too_large, permanent): the result is" in big_lines[0]
    assert "WARNING" in big_lines[0]
    assert lines[-1].endswith("batch done: 1 completed, 1 failed, 0 released"), lines[-1]


def result_for(job_id: str, lease_token: str, text: str) -> ResultOutcome:
    return ResultOutcome.model_validate(
        {
            "job_id": job_id,
            "lease_token": lease_token,
            "result": {
                "id": f"chatcmpl-{job_id}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
            },
        }
    )


def test_a_corrupt_spool_row_does_not_stop_the_node(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str, tmp_path: Path
) -> None:
    from openbeepboop_node.spool import Spool  # the node's own file format

    server, model, node_id = shared.server, f"{tag}-m", f"{tag}-node"
    api = cluster.api(server, shared.user_key)
    node = cluster.node(server, shared.node_key, node_id, model, "openai/m", llm.base_url)
    spool_path = tmp_path / "spool.sqlite3"
    edit_node(node, spool_path=str(spool_path))
    jobs = [api.submit(f"spooled {i}", model) for i in range(2)]
    # An earlier run of this node leased both jobs and finished them...
    fetched = httpx.post(
        server.url + FETCH_PATH,
        headers={"Authorization": f"Bearer {shared.node_key}"},
        json={"node_id": node_id, "models": [model], "max_jobs": 2, "wait": 5},
        timeout=30,
    )
    assert fetched.status_code == 200, fetched.text
    leases = fetched.json()
    assert sorted(lease["job_id"] for lease in leases) == sorted(jobs)
    spool = Spool(spool_path)
    spool.add([result_for(x["job_id"], x["lease_token"], "from the spool") for x in leases])
    spool.close()
    # ... and one row of its spool was damaged.
    with sqlite3.connect(spool_path) as db:
        db.execute("INSERT INTO outcomes VALUES ('job-x', 'tok-x', '{broken', 0)")
    proc = node.run()

    done = api.wait_terminal(jobs)

    for job in jobs:
        assert done[job]["status"] == "COMPLETED", done[job]
        assert done[job]["result"]["choices"][0]["message"]["content"] == "from the spool"
    assert llm.calls() == []  # delivered from the spool, never run again
    wait_until(lambda: "moved aside" in proc.log_text(), 30, "the quarantine to be logged")
    with sqlite3.connect(spool_path) as db:
        assert db.execute("SELECT job_id FROM quarantine").fetchall() == [("job-x",)]


def test_sigterm_mid_call_ends_within_the_grace_and_releases_the_lease(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str
) -> None:
    llm.configure(delay=120)  # a call that would hang far past the grace
    server, model = shared.server, f"{tag}-m"
    api = cluster.api(server, shared.user_key)
    node = cluster.node(server, shared.node_key, f"{tag}-node", model, "openai/m", llm.base_url)
    edit_node(node, shutdown_grace=1.0)
    node.run()
    job = api.submit("hang", model)
    wait_until(lambda: llm.calls_for("hang"), 60, "the call to start")

    started = time.monotonic()
    status = node.stop()
    took = time.monotonic() - started

    assert status == 0
    assert took < 1.0 + 10.0, took  # the grace, plus delivering the release
    assert api.entry(job)["status"] == "QUEUED"  # released: another node can run it
