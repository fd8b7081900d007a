"""Cancelling a queued job and a running one (docs/server-internals.md, 'Cancellation')."""

from __future__ import annotations

import time

from cluster import Cluster
from conftest import Shared
from openbeepboop_testkit.processes import wait_until
from openbeepboop_testkit.standin import StandinLLM


def test_cancel_a_queued_job(cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str) -> None:
    server, model = shared.server, f"{tag}-m"
    api = cluster.api(server, shared.user_key)
    job_id = api.submit("never run me", model)

    response = api.cancel(job_id)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "CANCELLED"
    assert api.entry(job_id)["status"] == "CANCELLED"
    # A node that starts now does not run it.
    node = cluster.node(server, shared.node_key, f"{tag}-late", model, "openai/m", llm.base_url)
    assert node.batch().returncode == 0
    assert llm.calls() == []
    entry = api.entry(job_id)
    assert entry["status"] == "CANCELLED" and entry["result"] is None


def test_cancel_a_running_job_frees_the_node(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str
) -> None:
    server, model = shared.server, f"{tag}-m"
    api = cluster.api(server, shared.user_key)
    llm.configure(delay=600)
    cluster.node(server, shared.node_key, f"{tag}-node", model, "openai/m", llm.base_url, 1).run()
    job_id = api.submit("a very long generation", model)
    wait_until(lambda: llm.calls_for("a very long generation"), 120, "the job to be running")
    assert api.entry(job_id)["status"] == "PROCESSING"

    response = api.cancel(job_id)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "CANCELLED"
    # The node (one slot) learns at its next heartbeat, drops the job and can
    # take the next one: that is how we see it learned.
    llm.configure(delay=0)
    next_id = api.submit("the next job", model)
    entry = api.wait_for_status(next_id, {"COMPLETED", "FAILED", "CANCELLED"})
    assert entry["status"] == "COMPLETED", entry
    cancelled = api.entry(job_id)
    assert cancelled["status"] == "CANCELLED" and cancelled["result"] is None
    assert len(llm.calls_for("a very long generation")) == 1


#: A lease so long that a heartbeat (every third of it, 100 s) could never
#: explain a cancel that arrives within the test's deadline.
LONG_LEASE_SECONDS = 300
#: What the cancel may take to close the node's LLM call: generous for a
#: loaded machine, and still far below the 100 s heartbeat period.
CANCEL_REACHES_NODE_SECONDS = 45.0


def test_a_cancel_reaches_the_running_llm_call_long_before_a_heartbeat(
    cluster: Cluster, llm: StandinLLM, tag: str
) -> None:
    server = cluster.server(lease_seconds=LONG_LEASE_SECONDS)
    server.start()
    model = f"{tag}-m"
    user_key = server.create_key("USER", "user")
    api = cluster.api(server, user_key)
    client = cluster.client_config(server, user_key)
    llm.configure(delay=120)
    node_key = server.create_key("NODE", "nodes")
    proc = cluster.node(server, node_key, f"{tag}-node", model, "openai/m", llm.base_url, 1).run()
    job_id = api.submit("a very long generation", model)
    wait_until(lambda: llm.calls_for("a very long generation"), 120, "the job to be running")
    assert api.entry(job_id)["status"] == "PROCESSING"

    out = cluster.client("cancel", job_id, "--config", str(client))
    cancelled_at = time.time()

    assert f"{job_id}: CANCELLED" in out.stdout
    # The node aborted the LLM call: the provider saw its connection close.
    wait_until(
        lambda: llm.calls_for("a very long generation")[0].hung_up_at is not None,
        CANCEL_REACHES_NODE_SECONDS,
        "the node to close the cancelled job's LLM call",
    )
    [call] = llm.calls_for("a very long generation")
    assert call.answered_at is None
    assert call.hung_up_at is not None and call.hung_up_at - cancelled_at < LONG_LEASE_SECONDS / 3
    proc.wait_for_log(f"job {job_id}: cancelled by the server, aborting it")
    # Its one slot is free at once: the next job runs, long before a heartbeat.
    llm.configure(delay=0)
    next_id = api.submit("the next job", model)
    entry = api.wait_for_status(next_id, {"COMPLETED", "FAILED", "CANCELLED"})
    assert entry["status"] == "COMPLETED", entry
    assert time.time() - cancelled_at < LONG_LEASE_SECONDS / 3
    # No result was stored for the cancelled job, and it never ran again.
    cancelled = api.entry(job_id)
    assert cancelled["status"] == "CANCELLED" and cancelled["result"] is None
    assert len(llm.calls_for("a very long generation")) == 1
