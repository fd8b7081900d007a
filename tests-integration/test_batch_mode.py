"""``openbeepboop-node batch``: drain what is queued, exit 0; fail loudly when it cannot.

Exit statuses: docs/node.md, "Exit status".
"""

from __future__ import annotations

from cluster import Cluster, Server
from conftest import Shared
from openbeepboop_testkit.processes import free_port
from openbeepboop_testkit.standin import StandinLLM

#: docs/node.md, "Exit status".
EXIT_SERVER_UNREACHABLE = 3
EXIT_KEY_REFUSED = 4


def test_batch_drains_the_queue_and_exits_zero(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str
) -> None:
    server, model = shared.server, f"{tag}-m"
    api = cluster.api(server, shared.user_key)
    node = cluster.node(server, shared.node_key, f"{tag}-cron", model, "openai/m", llm.base_url)
    prompts = [f"batch prompt {i}" for i in range(25)]
    ids = api.submit_many(prompts, model)
    other = api.submit("another model's job", f"{tag}-other-model")

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
    # A server URL where nothing listens (as after a crash or before a deploy).
    nowhere = Server(cluster, "absent", cluster.root / "absent", free_port())
    node_key = "sk-" + "x" * 43
    node = cluster.node(
        nowhere, node_key, "cron-box", "m", "openai/m", llm.base_url, more=["--no-check"]
    )

    done = node.batch()

    assert done.returncode == EXIT_SERVER_UNREACHABLE
    assert "Traceback" not in done.stderr
    assert done.stderr.strip(), "a failure must say why on stderr"
    assert llm.calls() == []


def test_batch_with_a_revoked_key_exits_with_the_key_status(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str
) -> None:
    server, model = shared.server, f"{tag}-m"
    name = f"{tag}-soon-revoked"
    key = server.create_key("NODE", name)
    node = cluster.node(server, key, f"{tag}-cron", model, "openai/m", llm.base_url)
    job = cluster.api(server, shared.user_key).submit("never run", model)
    server.cli("keys", "revoke", name)

    done = node.batch()

    assert done.returncode == EXIT_KEY_REFUSED, done.stderr
    assert "Traceback" not in done.stderr
    assert "rejected the API key" in done.stderr.strip().splitlines()[-1]
    assert llm.calls() == []
    assert cluster.api(server, shared.user_key).entry(job)["status"] == "QUEUED"
