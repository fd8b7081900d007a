"""A job slower than the server's lease keeps its lease while its node works.

See docs/node.md, "Heartbeats": a node heartbeats every third of the lease,
and a configured ``heartbeat_interval`` longer than that is a ceiling only.
"""

from __future__ import annotations

from cluster import Cluster, tune
from conftest import SHARED_LEASE_SECONDS, Shared
from openbeepboop_testkit.standin import StandinLLM

#: The LLM call outlasts the shared server's lease (6 s) by far.
SLOW_CALL_SECONDS = SHARED_LEASE_SECONDS + 4.0
#: What an operator might set, not knowing the server's lease.
LONG_HEARTBEAT_INTERVAL = 1000.0


def test_a_heartbeat_interval_longer_than_the_lease_does_not_let_it_expire(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str
) -> None:
    server, model, prompt = shared.server, f"{tag}-m", "slower than the lease"
    api = cluster.api(server, shared.user_key)
    node = cluster.node(server, shared.node_key, f"{tag}-n", model, "openai/m", llm.base_url, 1)
    tune(node.config, heartbeat_interval=LONG_HEARTBEAT_INTERVAL)
    llm.configure(delay=SLOW_CALL_SECONDS)
    proc = node.run()

    job_id = api.submit(prompt, model)
    entry = api.wait_for_status(job_id, {"COMPLETED", "FAILED"})

    assert entry["status"] == "COMPLETED", entry
    assert entry["attempts"] == 1
    assert len(llm.calls_for(prompt)) == 1
    log = proc.log_text()
    assert log.count("heartbeat_interval = 1000 s is longer than") == 1, log
    assert "aborted" not in log
