"""Several ``openbeepboop-server`` replicas on one PostgreSQL database (docs/server.md,
'Running several replicas').

A replica is a second ``start`` of the same config on another port; nodes and
clients may talk to any of them. These tests prove the queue stays exact
across replicas: each job runs once whichever replica takes it, and a
change made through one replica wakes the long-polls waiting on another.
"""

from __future__ import annotations

from cluster import Cluster
from openbeepboop_testkit.standin import StandinLLM


def test_job_submitted_to_one_replica_is_run_by_a_node_of_the_other(
    cluster: Cluster, postgres_url: str, llm: StandinLLM
) -> None:
    a = cluster.server(database_url=postgres_url)
    b = cluster.replica(a)
    a.start()
    b.start()
    node_key = a.create_key("NODE", "node")
    user_key = b.create_key("USER", "user")
    cluster.node(b, node_key, "node-b", "m", "openai/m", llm.base_url).run()
    b.wait_for_nodes(["node-b"])

    api_a = cluster.api(a, user_key)
    job_id = api_a.submit("across replicas", "m")
    entry = api_a.wait_for_status(job_id, {"COMPLETED", "FAILED"})

    assert entry["status"] == "COMPLETED", entry
    assert entry["result"]["choices"][0]["message"]["content"] == "Echo: across replicas"
    assert llm.prompt_counts() == {"across replicas": 1}
