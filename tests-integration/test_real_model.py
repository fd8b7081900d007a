"""The whole stack on a real model: SmolLM2-135M on llama.cpp (see testkit.llamacpp)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from cluster import Cluster
from conftest import Shared
from openbeepboop_testkit.llamacpp import MODEL_NAME, llamacpp_available, start_llamacpp
from openbeepboop_testkit.processes import ProcessSet, wait_until

#: The pool's name for the real model (the module's node serves it on the shared server).
REAL_MODEL = "real-smollm2"


@pytest.fixture(scope="module")
def smollm2(shared_world: Shared, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp on SmolLM2 and one node serving it, shared by this module's tests.

    Skips where the model is not installed — but never in CI, where it must
    run. Started once: loading the model and the node's LiteLLM are most of
    a test's time.
    """
    reason = llamacpp_available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the real-model test must run in CI: {reason}")
        pytest.skip(f"real model unavailable: {reason}")
    root = tmp_path_factory.mktemp("smollm2")
    procs = ProcessSet(root / "logs")
    world = Cluster(root, procs)
    try:
        _, base_url = start_llamacpp(procs, root)
        world.node(
            shared_world.server,
            shared_world.node_key,
            "real-cpu",
            REAL_MODEL,
            f"openai/{MODEL_NAME}",
            base_url,
            2,
        ).run()
        yield REAL_MODEL
    except BaseException:
        procs.dump_logs(sys.stdout)
        raise
    finally:
        procs.stop_all()
        world.close()


def test_smollm2_answers_through_server_node_and_client(shared: Shared, smollm2: str) -> None:
    server, model = shared.server, smollm2

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


def test_smollm2_runs_a_ten_line_batch_through_the_openai_sdk(shared: Shared, smollm2: str) -> None:
    """Issue 20's proof on a real model: files.create + batches.create, SDK to output file."""
    server, model = shared.server, smollm2

    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/openai/v1", api_key=shared.user_key, max_retries=0)
    lines = [
        {
            "custom_id": f"q-{number}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": f"What is {number} plus {number}?"}],
                "max_tokens": 8,
                "temperature": 0,
            },
        }
        for number in range(10)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = client.files.create(file=("questions.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    def ended() -> Any:
        current = client.batches.retrieve(batch.id)
        return current if current.status in ("completed", "failed", "expired") else None

    done = wait_until(ended, 300, "the batch to end")
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (10, 0)
    assert done.output_file_id is not None and done.error_file_id is None
    output = [
        json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()
    ]
    assert [line["custom_id"] for line in output] == [f"q-{number}" for number in range(10)]
    for line in output:
        assert line["error"] is None and line["response"]["status_code"] == 200
        answer = line["response"]["body"]
        assert answer["choices"][0]["message"]["content"].strip()
        assert 0 < answer["usage"]["completion_tokens"] <= 8
        assert line["response"]["request_id"].startswith("job-")
