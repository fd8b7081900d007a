"""``openbeepboop-node setup`` leaves no trace on the server: a node is seen once it runs.

Real server, real ``openbeepboop-node`` command lines. Setup checks that the
server takes the key; a failed setup writes nothing and must not show a
ghost node in ``openbeepboop-server nodes`` (nor count it online), and a
node that was set up but never started is not seen either.
"""

from __future__ import annotations

import re

from cluster import NODE, Cluster
from conftest import Shared
from openbeepboop_testkit.cluster import setup_argv
from openbeepboop_testkit.processes import free_port
from openbeepboop_testkit.standin import StandinLLM

#: docs/node.md, "Exit status".
EXIT_BACKEND_UNREACHABLE = 5


def listed(shared: Shared, node_id: str) -> bool:
    out = shared.server.cli("nodes").stdout
    return re.search(rf"(?<![\w.-]){re.escape(node_id)}(?![\w.-])", out) is not None


def test_a_setup_that_failed_or_never_ran_is_no_node_of_the_server(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str
) -> None:
    server, key = shared.server, shared.node_key
    ghost = cluster.root / "ghost" / "node_config.toml"
    failed = cluster.run(
        setup_argv(
            NODE,
            ghost,
            server.url,
            key,
            "--node-id",
            f"{tag}-ghost",
            "--model",
            "llama3",
            "--litellm-model",
            "ollama_chat/llama3",
            "--api-base",
            f"http://127.0.0.1:{free_port()}",
        ),
        check=False,
    )
    assert failed.returncode == EXIT_BACKEND_UNREACHABLE, failed.stderr
    assert "nothing written" in failed.stderr and not ghost.exists()

    node = cluster.setup_node(
        server,
        key,
        f"{tag}-idle",
        cluster.root / "idle" / "node_config.toml",
        model=f"{tag}-m",
        litellm_model="openai/standin-model",
        api_base=llm.base_url,
        concurrency=1,
    )
    assert node.config.exists()
    assert not listed(shared, f"{tag}-ghost")
    assert not listed(shared, f"{tag}-idle")  # set up, not running: not seen
