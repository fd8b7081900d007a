"""``openbeepboop-node batch``: drain what is queued, exit 0; fail loudly when it cannot."""

from __future__ import annotations

from cluster import Cluster
from openbeepboop_testkit.standin import StandinLLM


def test_batch_drains_the_queue_and_exits_zero(cluster: Cluster, llm: StandinLLM) -> None:
    server = cluster.server()
    server.start()
    node_key = server.create_key("NODE", "cron")
    api = cluster.api(server, server.create_key("USER", "user"))
    node = cluster.node(server, node_key, "cron-box", "m", "openai/m", llm.base_url, 4)
    prompts = [f"batch prompt {i}" for i in range(25)]
    ids = api.submit_many(prompts, "m")
    other = api.submit("another model's job", "other-model")

    done = node.batch()

    assert done.returncode == 0, done.stderr
    entries = api.poll(ids)
    assert {entry["status"] for entry in entries} == {"COMPLETED"}
    assert llm.prompt_counts() == dict.fromkeys(prompts, 1)
    assert api.entry(other)["status"] == "QUEUED"

    # Nothing left: a second run is a quick, successful no-op.
    again = node.batch()
    assert again.returncode == 0, again.stderr
    assert len(llm.calls()) == 25


def test_batch_exits_nonzero_with_one_line_when_the_server_is_down(
    cluster: Cluster, llm: StandinLLM
) -> None:
    server = cluster.server()
    server.start()
    node_key = server.create_key("NODE", "cron")
    node = cluster.node(server, node_key, "cron-box", "m", "openai/m", llm.base_url)
    server.stop()

    done = node.batch()

    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip(), "a failure must say why on stderr"
    assert llm.calls() == []
