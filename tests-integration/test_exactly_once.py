"""Three nodes share 300 jobs: every prompt reaches an LLM exactly once."""

from __future__ import annotations

from cluster import Cluster
from conftest import Shared
from openbeepboop_testkit.standin import StandinLLM


def test_three_nodes_300_jobs_each_prompt_runs_once(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str
) -> None:
    llm.configure(delay=0.05)
    server, model = shared.server, f"{tag}-m"
    api = cluster.api(server, shared.user_key)
    nodes = [
        cluster.node(
            server,
            shared.node_key,
            f"{tag}-node-{i}",
            model,
            "openai/m",
            llm.base_url,
            4,
            f"sk-provider-{i}",
        )
        for i in range(3)
    ]
    for node in nodes:
        node.run()
    # All three are polling before the work arrives, so all three share it.
    server.wait_for_nodes(node.node_id for node in nodes)

    prompts = [f"unique prompt #{i}" for i in range(300)]
    ids = api.submit_many(prompts, model)
    done = api.wait_terminal(ids)

    assert {entry["status"] for entry in done.values()} == {"COMPLETED"}
    counts = llm.prompt_counts()
    assert sum(counts.values()) == 300
    assert counts == dict.fromkeys(prompts, 1)
    for job_id, prompt in zip(ids, prompts, strict=True):
        assert done[job_id]["result"]["choices"][0]["message"]["content"] == f"Echo: {prompt}"
        assert done[job_id]["attempts"] == 1
    # Every node did some of the work (each calls the LLM with its own provider key).
    assert {call.api_key for call in llm.calls()} == {f"sk-provider-{i}" for i in range(3)}
