"""Nodes receive only jobs for the models they declare (docs/server-internals.md, "Claiming")."""

from __future__ import annotations

from cluster import Cluster
from conftest import Shared
from openbeepboop_testkit.standin import StandinLLM


def test_two_nodes_two_models_each_gets_only_its_own(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str
) -> None:
    server, node_key = shared.server, shared.node_key
    api = cluster.api(server, shared.user_key)
    model_a, model_b, model_c = f"{tag}-model-a", f"{tag}-model-b", f"{tag}-model-c"
    # Same LLM server, but each node calls it with its own upstream model and
    # provider key, so every call says which node made it.
    alpha = cluster.node(
        server, node_key, f"{tag}-alpha", model_a, "openai/up-a", llm.base_url, 2, "sk-prov-a"
    )
    beta = cluster.node(
        server, node_key, f"{tag}-beta", model_b, "openai/up-b", llm.base_url, 2, "sk-prov-b"
    )
    alpha.run()
    beta.run()
    server.wait_for_nodes([f"{tag}-alpha", f"{tag}-beta"])

    jobs = {api.submit(f"for a #{i}", model_a): "a" for i in range(10)}
    jobs |= {api.submit(f"for b #{i}", model_b): "b" for i in range(10)}
    orphan = api.submit("nobody serves model-c", model_c)
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
    served = {card["id"] for card in models.json()["data"]}
    assert {model_a, model_b} <= served and model_c not in served
