"""The whole stack on a real model: SmolLM2-135M on llama.cpp (see testkit.llamacpp)."""

from __future__ import annotations

import os

import pytest
from cluster import Cluster
from conftest import Shared
from openbeepboop_testkit.llamacpp import MODEL_NAME, llamacpp_available, start_llamacpp


@pytest.fixture
def llamacpp_ready() -> None:
    """Skip where the model is not installed — but never in CI, where it must run."""
    reason = llamacpp_available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the real-model test must run in CI: {reason}")
        pytest.skip(f"real model unavailable: {reason}")


@pytest.mark.usefixtures("llamacpp_ready")
def test_smollm2_answers_through_server_node_and_client(
    cluster: Cluster, shared: Shared, tag: str
) -> None:
    _, base_url = start_llamacpp(cluster.procs, cluster.root)
    server, model = shared.server, f"{tag}-smollm2"
    cluster.node(
        server, shared.node_key, f"{tag}-cpu", model, f"openai/{MODEL_NAME}", base_url, 2
    ).run()

    from openbeepboop import Client

    client = Client(base_url=server.url, api_key=shared.user_key)
    job = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=32,
        temperature=0,
    )
    result = job.get(wait=True, timeout=240)

    choice = result.choices[0]
    assert choice.message.content and choice.message.content.strip()
    assert result.usage is not None and result.usage.completion_tokens > 0
    assert choice.finish_reason
