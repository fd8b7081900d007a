"""Which models the pool serves right now, and what a submit for one nobody serves says.

See docs/server.md, "Which models are served", and docs/client.md, "Waiting".
"""

from __future__ import annotations

import json
import time
from typing import Any

from cluster import CLIENT, Cluster, parse_json_output
from conftest import Shared
from openbeepboop_schemas import CHAT_COMPLETIONS_PATH, MODELS_PATH, WARNING_HEADER
from openbeepboop_testkit.processes import wait_until
from openbeepboop_testkit.standin import StandinLLM
from openbeepboop_testkit.terminal import run_in_terminal

#: A short window so the test is quick; the lease keeps a busy node's heartbeat
#: (a third of it) inside the window, as the server checks at start-up.
WINDOW_SECONDS = 6
LEASE_SECONDS = 9
#: What a loaded two-core machine may add to the window: the last refresh of the
#: killed node's row before it died, the snapshot's second, the test's own polls.
SLACK_SECONDS = 6


def _served(api: Any) -> dict[str, int]:
    body = api.http.get(MODELS_PATH).json()
    return {card["id"]: card["nodes"] for card in body["data"]}


def _submit(api: Any, model: str, prompt: str) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    response = api.http.post(CHAT_COMPLETIONS_PATH, json=body)
    assert response.status_code == 202, response.text
    return response


def test_a_killed_nodes_models_leave_within_the_window(
    cluster: Cluster, llm: StandinLLM, tag: str
) -> None:
    server = cluster.server(node_seen_seconds=WINDOW_SECONDS, lease_seconds=LEASE_SECONDS)
    server.start()
    node_key = server.create_key("NODE", "nodes")
    api = cluster.api(server, server.create_key("USER", "user"))
    doomed_model, live_model = f"{tag}-doomed", f"{tag}-live"
    doomed = cluster.node(server, node_key, f"{tag}-a", doomed_model, "openai/m", llm.base_url)
    live = cluster.node(server, node_key, f"{tag}-b", live_model, "openai/m", llm.base_url)
    doomed.run()
    live.run()
    wait_until(lambda: _served(api) == {doomed_model: 1, live_model: 1}, 120, "both nodes' models")
    assert _submit(api, live_model, "served").json()["warnings"] == []

    assert doomed.kill() == -9
    killed = time.monotonic()
    seen: list[dict[str, int]] = []

    def doomed_gone() -> bool:
        seen.append(_served(api))
        return doomed_model not in seen[-1]

    wait_until(doomed_gone, WINDOW_SECONDS + 60, "the killed node's model to leave", 0.2)
    gone_after = time.monotonic() - killed
    assert gone_after <= WINDOW_SECONDS + SLACK_SECONDS, gone_after
    # The idle node that lives on never drops out, not even for one look, also
    # over two more windows (it is seen only through its parked fetch).
    watch_until = time.monotonic() + 2 * WINDOW_SECONDS
    while time.monotonic() < watch_until:
        seen.append(_served(api))
        time.sleep(0.2)
    assert all(served.get(live_model) == 1 for served in seen), seen

    # Submits learn it within about a second more (their snapshot), and still queue.
    def warned() -> list[dict[str, Any]]:
        return list(_submit(api, doomed_model, "orphan").json()["warnings"])

    (warning,) = wait_until(warned, 30, "a submit for the dead node's model to warn")
    assert warning["model"] == doomed_model


def test_an_unserved_model_is_queued_with_a_warning_the_cli_prints(
    cluster: Cluster, shared: Shared, tag: str
) -> None:
    model = f"{tag}-nobody"
    api = cluster.api(shared.server, shared.user_key)
    response = _submit(api, model, "anyone there?")
    job = response.json()
    assert job["status"] == "QUEUED"
    (warning,) = job["warnings"]
    assert warning["code"] == "model_not_served" and warning["model"] == model
    assert response.headers[WARNING_HEADER] == warning["message"]
    assert api.entry(job["id"])["status"] == "QUEUED"

    config = cluster.client_config(shared.server, shared.user_key)
    out = cluster.client("submit", "hello?", "--model", model, "--config", str(config))
    assert out.stdout.startswith("Job submitted successfully. ID: job-")
    assert out.stderr == f"Warning: {warning['message']}\n"


def test_submit_wait_timeout_ends_on_time_and_names_the_job(
    cluster: Cluster, shared: Shared, tag: str
) -> None:
    config = cluster.client_config(shared.server, shared.user_key)
    argv = ("submit", "is anybody out there", "--model", f"{tag}-nobody", "--wait")
    started = time.monotonic()
    out = cluster.client(*argv, "--timeout", "3", "--config", str(config), check=False)
    took = time.monotonic() - started

    assert out.returncode == 124, out.stderr
    assert 3 <= took < 3 + 30, took  # the wait itself, plus starting Python on a busy machine
    (entry,) = parse_json_output(out.stdout)  # stdout keeps the poll array contract
    job_id = entry["id"]
    assert entry["status"] == "QUEUED"
    warning, waiting, error = out.stderr.splitlines()
    assert warning.startswith("Warning: no node serving model")
    assert waiting == f"Waiting for job {job_id} (model {tag}-nobody), up to 3s..."
    assert error.startswith(f"Error: job {job_id} is still QUEUED after waiting 3s")
    assert error.endswith(f"Collect it later with: openbeepboop-client poll {job_id}")

    # What it said is true: the job is still there to collect.
    later = cluster.client("poll", job_id, "--config", str(config))
    assert json.loads(later.stdout)[0]["status"] == "QUEUED"


def test_on_a_terminal_a_wait_for_an_unserved_model_says_what_it_waits_for(
    cluster: Cluster, shared: Shared, tag: str
) -> None:
    config = cluster.client_config(shared.server, shared.user_key)
    argv = ("submit", "hello?", "--model", f"{tag}-nobody", "--wait", "--timeout", "2")
    out = run_in_terminal([CLIENT, *argv, "--config", str(config)], env=cluster.env)

    assert out.returncode == 124, out
    assert out.stdout == ""  # no answer, and no JSON for a person
    assert out.stderr.startswith("Warning: no node serving model")
    assert f"({tag}-nobody): QUEUED, no node has taken it yet" in out.stderr
    error = out.stderr.split("\r\x1b[K")[-1].strip()  # after the erased status line
    assert error.startswith("Error: job job-") and "is still QUEUED after waiting 2s" in error
    assert "stays queued on the server" in error
