"""Cancelling a queued job and a running one (docs/server-internals.md, "Cancellation")."""

from __future__ import annotations

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
