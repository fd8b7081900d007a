"""The seed README's workflow, end to end, through the installed commands.

setup → start → keys → node setup/run → client setup → ``submit --wait``;
``submit`` then ``poll``; and the README's Python library example, verbatim.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from cluster import Cluster, parse_json_output
from conftest import Shared
from openbeepboop_testkit.processes import run_command, wait_until
from openbeepboop_testkit.standin import PERMANENT_ERROR_MESSAGE, StandinLLM

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_library_example() -> str:
    """The first ```python block of the README's "Python library" section."""
    text = README.read_text()
    heading = re.search(r"^#+\s*Python library\s*$", text, re.M)
    assert heading, "README.md has no 'Python library' section"
    block = re.search(r"^```python\n(.*?)^```", text[heading.end() :], re.S | re.M)
    assert block, "the README's 'Python library' section has no ```python block"
    return block.group(1)


def test_cli_workflow_submit_wait_and_poll(cluster: Cluster, llm: StandinLLM) -> None:
    server = cluster.server()
    server.start()
    node_key = server.create_key("NODE", "gpu-box")
    user_key = server.create_key("USER", "alice")
    node = cluster.node(server, node_key, "gpu-box-1", "llama3", "openai/llama3", llm.base_url)
    node.run()
    config = cluster.client_config(server, user_key)

    prompt = "Explain quantum computing in one sentence."
    done = cluster.client("submit", prompt, "--model", "llama3", "--wait", "--config", str(config))
    [entry] = parse_json_output(done.stdout)
    assert entry["status"] == "COMPLETED" and entry["completed"] is True
    assert entry["id"].startswith("job-")
    assert entry["result"]["object"] == "chat.completion"
    assert entry["result"]["choices"][0]["message"]["content"] == f"Echo: {prompt}"
    assert entry["error"] is None

    prompt2 = "Write a short poem about rust."
    done = cluster.client("submit", prompt2, "--model", "llama3", "--config", str(config))
    match = re.fullmatch(r"Job submitted successfully\. ID: (job-\S+)\n?", done.stdout)
    assert match, done.stdout
    job_id = match.group(1)

    def polled() -> dict[str, object] | None:
        out = cluster.client("poll", job_id, "--config", str(config))
        [entry] = parse_json_output(out.stdout)
        return entry if entry["status"] == "COMPLETED" else None

    entry = wait_until(polled, 120, f"{job_id} to complete (via poll)")
    assert entry["result"]["choices"][0]["message"]["content"] == f"Echo: {prompt2}"
    # Each prompt reached the LLM once, with the model the operator configured.
    assert llm.prompt_counts() == {prompt: 1, prompt2: 1}
    assert {call.model for call in llm.calls()} == {"llama3"}


def test_readme_library_example_runs_verbatim(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str
) -> None:
    example = readme_library_example()
    server = shared.server
    user_key = server.create_key("USER", f"{tag}-reader")
    # The example asks for "llama3": that is the model name this node serves
    # (the only test that uses that name on the shared server).
    node = cluster.node(
        server, shared.node_key, f"{tag}-node", "llama3", "openai/llama3", llm.base_url
    )
    node.run()

    script = cluster.root / "readme_example.py"
    script.write_text(example)
    env = {
        **cluster.env,
        "OPENBEEPBOOP_SERVER_URL": server.url,
        "OPENBEEPBOOP_API_KEY": user_key,
    }
    done = run_command([sys.executable, str(script)], env=env, timeout=180)
    assert "Job submitted with ID: job-" in done.stdout, done.stdout
    prompts = list(llm.prompt_counts())
    assert len(prompts) == 1
    # The example prints the model's answer: the stand-in echoes the prompt.
    assert f"Echo: {prompts[0]}" in done.stdout, done.stdout


def test_submit_file_and_results_in_openai_batch_format(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str
) -> None:
    llm.configure(fail_prompts=["POISON"])
    server = shared.server
    model = f"{tag}-model"
    cluster.node(server, shared.node_key, f"{tag}-node", model, "openai/m", llm.base_url).run()
    config = cluster.client_config(server, shared.user_key)
    prompts = {f"req-{i}": f"batch line {i}" for i in range(5)}
    prompts["req-bad"] = "a POISON line"
    batch = cluster.root / "batch.jsonl"
    batch.write_text(
        "".join(
            json.dumps(
                {
                    "custom_id": custom_id,
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": model, "messages": [{"role": "user", "content": text}]},
                }
            )
            + "\n"
            for custom_id, text in prompts.items()
        )
    )
    ids_file = cluster.root / "batch.ids.jsonl"
    out = cluster.root / "results.jsonl"

    cluster.client("submit-file", str(batch), "--ids-out", str(ids_file), "--config", str(config))
    cluster.client(
        "results", str(ids_file), "-o", str(out), "--wait", "--config", str(config), timeout=240
    )

    lines = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    by_id = {line["custom_id"]: line for line in lines}
    assert set(by_id) == set(prompts)
    for custom_id, text in prompts.items():
        line = by_id[custom_id]
        if custom_id == "req-bad":
            assert line["response"] is None or line["response"].get("status_code") != 200
            assert PERMANENT_ERROR_MESSAGE in line["error"]["message"], line
            continue
        assert line["error"] is None, line
        assert line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["choices"][0]["message"]["content"] == f"Echo: {text}"
