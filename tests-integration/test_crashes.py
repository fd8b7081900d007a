"""kill -9 of a node or of the server loses nothing.

See docs/node.md, "Never losing a result", and docs/server-internals.md, "Leases".
"""

from __future__ import annotations

from cluster import Cluster
from conftest import Shared
from openbeepboop_testkit.processes import wait_until
from openbeepboop_testkit.standin import StandinLLM


def test_job_of_a_killed_node_completes_on_another_after_lease_expiry(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str
) -> None:
    server, node_key, model = shared.server, shared.node_key, f"{tag}-m"
    api = cluster.api(server, shared.user_key)
    first = cluster.node(server, node_key, f"{tag}-doomed", model, "openai/m", llm.base_url, 1)
    second = cluster.node(server, node_key, f"{tag}-rescuer", model, "openai/m", llm.base_url)

    llm.configure(delay=600)  # the first node is stuck in the LLM call
    first.run()
    job_id = api.submit("survive a node crash", model)
    wait_until(lambda: llm.calls_for("survive a node crash"), 120, "the first node's LLM call")
    assert api.entry(job_id)["status"] == "PROCESSING"

    first.kill()
    llm.configure(delay=0)
    second.run()
    entry = api.wait_for_status(job_id, {"COMPLETED", "FAILED"})

    assert entry["status"] == "COMPLETED", entry
    assert entry["attempts"] >= 2
    assert entry["result"]["choices"][0]["message"]["content"] == "Echo: survive a node crash"
    assert len(llm.calls_for("survive a node crash")) == 2


def test_server_killed_holding_200_accepted_jobs_keeps_them_all(
    cluster: Cluster, llm: StandinLLM
) -> None:
    server = cluster.server()
    server.start()
    node_key = server.create_key("NODE", "node")
    user_key = server.create_key("USER", "user")
    api = cluster.api(server, user_key)
    prompts = [f"durable prompt {i}" for i in range(200)]
    ids = [api.submit(prompt, "m") for prompt in prompts[:100]]
    ids += api.submit_many(prompts[100:], "m")

    assert server.kill() == -9
    server.start()

    entries = api.poll(ids)
    assert [entry["status"] for entry in entries] == ["QUEUED"] * 200
    cluster.node(server, node_key, "node-1", "m", "openai/m", llm.base_url, concurrency=8).run()
    done = api.wait_terminal(ids)
    assert {entry["status"] for entry in done.values()} == {"COMPLETED"}
    for job_id, prompt in zip(ids, prompts, strict=True):
        content = done[job_id]["result"]["choices"][0]["message"]["content"]
        assert content == f"Echo: {prompt}"
    assert llm.prompt_counts() == dict.fromkeys(prompts, 1)
