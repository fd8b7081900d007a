"""The seed README's workflow, end to end, through the installed commands.

setup → start → keys → node setup/run → client setup → ``submit --wait``;
``submit`` then ``poll``; and the client's everyday output as a person sees
it on a terminal (a real pseudo-terminal) and as a script sees it through a
pipe. The README's own commands and library example run in
test_readme_commands.py.
"""

from __future__ import annotations

import json
import re
import shlex

from cluster import CLIENT, Cluster, parse_json_output
from conftest import Shared
from openbeepboop_schemas import MODELS_PATH
from openbeepboop_testkit.processes import wait_until
from openbeepboop_testkit.standin import PERMANENT_ERROR_MESSAGE, StandinLLM
from openbeepboop_testkit.terminal import TerminalRun, run_in_terminal


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
    # setup without a default model names the served one in its "Try it" line,
    # and the line works as printed, on a terminal: the answer's text, nothing else.
    api = cluster.api(server, user_key)
    wait_until(
        lambda: [card["id"] for card in api.http.get(MODELS_PATH).json()["data"]] == ["llama3"],
        120,
        "the node's model to be served",
    )
    fresh = cluster.root / "clients" / "new user" / "client_config.toml"
    fresh.parent.mkdir(parents=True)
    setup = cluster.client(
        "setup", "--non-interactive", "--server-url", server.url,
        "--api-key", user_key, "--config", str(fresh),
    )  # fmt: skip
    try_it = setup.stdout.splitlines()[-1]
    assert try_it.startswith("Try it: openbeepboop-client submit"), setup.stdout
    argv = shlex.split(try_it.removeprefix("Try it: "))
    assert argv[3:] == ["--config", str(fresh), "--model", "llama3", "--wait"]
    tried = run_in_terminal([CLIENT, *argv[1:]], env=cluster.env)
    assert tried.returncode == 0, tried
    assert tried.stdout == "Echo: Say hello\n"
    assert "Waiting for job-" in tried.stderr  # the status line, erased at the end
    assert tried.stderr.endswith("\r\x1b[K")

    # Each prompt reached the LLM once, with the model the operator configured.
    assert llm.prompt_counts() == {prompt: 1, prompt2: 1, "Say hello": 1}
    assert {call.model for call in llm.calls()} == {"llama3"}


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


def _in_terminal(cluster: Cluster, *args: str) -> TerminalRun:
    """``openbeepboop-client ARGS`` with stdout and stderr on pseudo-terminals."""
    return run_in_terminal([CLIENT, *args], env=cluster.env)


def test_the_client_talks_to_people_and_to_scripts(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str
) -> None:
    server = shared.server
    model = f"{tag}-model"
    node_id = f"{tag}-node"
    cluster.node(server, shared.node_key, node_id, model, "openai/m", llm.base_url).run()
    config = cluster.client_config(server, shared.user_key, name=tag)
    flags = ("--model", model, "--config", str(config))
    # --json on a terminal: the poll array, as a pipe gets it.
    as_json = _in_terminal(cluster, "submit", "json please", "--wait", "--json", *flags)
    (entry,) = parse_json_output(as_json.stdout)
    assert entry["result"]["choices"][0]["message"]["content"] == "Echo: json please"
    # --text through a pipe: only the answer.
    as_text = cluster.client("submit", "text please", "--wait", "--text", *flags)
    assert as_text.stdout == "Echo: text please\n"

    # A slow model: the status line says which node runs the job; the answer,
    # cut at --max-tokens, is marked as truncated on stderr.
    llm.configure(delay=5.0)
    slow = _in_terminal(
        cluster, "submit", "one two three four", "--max-tokens", "3", "--wait", *flags
    )
    assert slow.returncode == 0, slow
    assert slow.stdout == "Echo: one two\n"
    assert f"PROCESSING on {node_id}, attempt 1" in slow.stderr, slow.stderr
    assert "Note: the answer is truncated" in slow.stderr
    assert "finish_reason: length" in slow.stderr
    llm.configure(delay=0.0)

    # list has a header row; cancel says what it did, and that a second one did nothing.
    listed = cluster.client("list", "--limit", "3", "--config", str(config))
    assert listed.stdout.splitlines()[0].split() == ["ID", "STATUS", "MODEL", "CREATED"]
    queued = cluster.client("submit", "nobody home", "--model", f"{tag}-nobody", *flags[2:])
    job_id = queued.stdout.split("ID: ")[1].strip()
    first = cluster.client("cancel", job_id, "--config", str(config))
    assert first.stdout == f"{job_id}: CANCELLED (was QUEUED)\n"
    again = cluster.client("cancel", job_id, "--config", str(config))
    assert again.stdout == f"{job_id}: already CANCELLED (nothing to do)\n"
