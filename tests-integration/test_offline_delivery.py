"""Results finished while the server is down are delivered after it restarts.

See docs/node.md, "Never losing a result".
"""

from __future__ import annotations

from cluster import Cluster
from openbeepboop_testkit.processes import wait_until
from openbeepboop_testkit.standin import StandinLLM


def test_results_held_during_server_outage_arrive_without_rerunning(
    cluster: Cluster, llm: StandinLLM
) -> None:
    server = cluster.server()
    server.start()
    node_key = server.create_key("NODE", "node")
    api = cluster.api(server, server.create_key("USER", "user"))
    prompts = [f"finished while offline {i}" for i in range(3)]
    llm.configure(delay=3)
    cluster.node(server, node_key, "node-1", "m", "openai/m", llm.base_url, concurrency=3).run()
    ids = [api.submit(prompt, "m") for prompt in prompts]
    wait_until(lambda: len(llm.calls()) == 3, 120, "all three jobs to be running")

    server.stop()
    # The node finishes every job while it cannot reach the server.
    wait_until(lambda: len(llm.answered_calls()) == 3, 120, "the LLM to answer all three")
    server.start()

    done = api.wait_terminal(ids)
    for job_id, prompt in zip(ids, prompts, strict=True):
        assert done[job_id]["status"] == "COMPLETED", done[job_id]
        assert done[job_id]["result"]["choices"][0]["message"]["content"] == f"Echo: {prompt}"
        assert done[job_id]["attempts"] == 1
    assert llm.prompt_counts() == dict.fromkeys(prompts, 1)
