"""Nodes receive only jobs for the models they declare (SPEC §3, routing)."""

from __future__ import annotations

from cluster import Cluster
from openbeepboop_testkit.standin import StandinLLM


def test_two_nodes_two_models_each_gets_only_its_own(cluster: Cluster, llm: StandinLLM) -> None:
    server = cluster.server()
    server.start()
    node_key = server.create_key("NODE", "nodes")
    api = cluster.api(server, server.create_key("USER", "user"))
    # Same LLM server, but each node calls it with its own upstream model and
    # provider key, so every call says which node made it.
    alpha = cluster.node(
        server, node_key, "alpha", "model-a", "openai/up-a", llm.base_url, 2, "sk-prov-a"
    )
    beta = cluster.node(
        server, node_key, "beta", "model-b", "openai/up-b", llm.base_url, 2, "sk-prov-b"
    )
    alpha.run()
    beta.run()
    server.wait_for_nodes(["alpha", "beta"])

    jobs = {api.submit(f"for a #{i}", "model-a"): "a" for i in range(10)}
    jobs |= {api.submit(f"for b #{i}", "model-b"): "b" for i in range(10)}
    orphan = api.submit("nobody serves model-c", "model-c")
    done = api.wait_terminal(list(jobs))

    assert {entry["status"] for entry in done.values()} == {"COMPLETED"}
    calls = llm.calls()
    assert len(calls) == 20
    for call in calls:
        side = "a" if call.prompt.startswith("for a") else "b"
        assert (call.model, call.api_key) == (f"up-{side}", f"sk-prov-{side}"), call
    assert api.entry(orphan)["status"] == "QUEUED"
    models = api.http.get("/v1/models")
    assert models.status_code == 200
    assert {"model-a", "model-b"} <= {card["id"] for card in models.json()["data"]}
