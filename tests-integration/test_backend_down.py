"""A node whose own LLM backend is down costs its jobs nothing.

See docs/node.md, "A backend that is down".

Real server, real node processes, real LiteLLM; the dead backend is a closed
loopback port where the stand-in is started later (the backend coming up).
"""

from __future__ import annotations

import json
import sys
import time

import pytest
import tomli_w
from cluster import NODE, Api, Cluster, Node, Server, parse_json_output, tune
from conftest import Shared
from openbeepboop_testkit.cluster import setup_argv
from openbeepboop_testkit.processes import free_port
from openbeepboop_testkit.standin import StandinLLM

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: docs/node.md, "Exit status".
EXIT_BACKEND_UNREACHABLE = 5
#: How long the jobs of the dead backend are watched staying QUEUED with no
#: attempt counted. The old behaviour (fail as retryable, 0.5 s retry backoff
#: on the shared server, 3 attempts) turned them all FAILED within seconds.
OBSERVED_PAUSE_SECONDS = 12.0


@pytest.fixture
def dead_port() -> int:
    """A loopback port where nothing listens (yet)."""
    return free_port()


def add_dead_model(cluster: Cluster, node: Node, server: Server, key: str, port: int) -> None:
    """A second model on the node, whose backend is down: set up without the checks."""
    cluster.run(
        setup_argv(
            NODE,
            node.config,
            server.url,
            key,
            "--no-check",
            "--model",
            "dead",
            "--litellm-model",
            "openai/dead-up",
            "--api-base",
            f"http://127.0.0.1:{port}/v1",
        )
    )


def job(api: Api, job_id: str) -> dict[str, object]:
    response = api.get(job_id)
    assert response.status_code == 200, response.text
    data: dict[str, object] = response.json()
    return data


def test_dead_backend_jobs_wait_unharmed_while_the_live_model_works(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str, dead_port: int
) -> None:
    server, key = shared.server, shared.node_key
    api = cluster.api(server, shared.user_key)
    live_model = f"{tag}-live"
    node = cluster.node(server, key, f"{tag}-two", live_model, "openai/live-up", llm.base_url)
    add_dead_model(cluster, node, server, key, dead_port)
    # Rename the dead entry to a model name unique to this test.
    config = tomllib.loads(node.config.read_text())
    for entry in config["models"]:
        if entry["name"] == "dead":
            entry["name"] = f"{tag}-dead"
    config["backend_probe_max"] = 2.0  # probes at most 2 s apart: a short test
    node.config.write_text(tomli_w.dumps(config))
    dead_model = f"{tag}-dead"
    proc = node.run()

    dead = api.submit_many([f"dead job {i}" for i in range(20)], dead_model)
    live = api.submit_many([f"live job {i}" for i in range(5)], live_model)
    done = api.wait_terminal(live)
    assert {entry["status"] for entry in done.values()} == {"COMPLETED"}

    # The node took some dead jobs, found no backend, handed them back: they
    # wait, QUEUED, with no attempt counted, and are not taken again.
    proc.wait_for_log("its backend cannot be reached", 120)
    deadline = time.monotonic() + OBSERVED_PAUSE_SECONDS
    more_live = api.submit_many([f"live meanwhile {i}" for i in range(3)], live_model)
    while time.monotonic() < deadline:
        for job_id in dead:
            state = job(api, job_id)
            assert (state["status"], state["attempts"]) == ("QUEUED", 0), state
        time.sleep(1.0)
    done = api.wait_terminal(more_live)
    assert {entry["status"] for entry in done.values()} == {"COMPLETED"}

    with StandinLLM(port=dead_port) as backend:  # the backend comes up
        finished = api.wait_terminal(dead)
        assert {entry["status"] for entry in finished.values()} == {"COMPLETED"}
        assert {entry["attempts"] for entry in finished.values()} == {1}
        assert backend.prompt_counts() == {f"dead job {i}": 1 for i in range(20)}
    log = proc.log_text()
    assert log.count("its backend cannot be reached") == 1
    assert log.count("its backend answers again") == 1


def test_batch_against_a_dead_backend_exits_with_its_status_and_touches_nothing(
    cluster: Cluster, shared: Shared, tag: str, dead_port: int
) -> None:
    server, model = shared.server, f"{tag}-m"
    api = cluster.api(server, shared.user_key)
    node = cluster.node(
        server,
        shared.node_key,
        f"{tag}-cron",
        model,
        "openai/m",
        f"http://127.0.0.1:{dead_port}/v1",
        more=["--no-check"],
    )
    tune(node.config, batch_backend_wait=2.0)
    ids = api.submit_many([f"cron job {i}" for i in range(6)], model)

    started = time.monotonic()
    done = node.batch()

    assert done.returncode == EXIT_BACKEND_UNREACHABLE, done.stderr
    assert time.monotonic() - started < 60
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"openbeepboop-node: error: the backend of model(s) {model} stayed")
    assert "Traceback" not in done.stderr
    for job_id in ids:
        state = job(api, job_id)
        assert (state["status"], state["attempts"]) == ("QUEUED", 0), state


def test_setup_and_check_tell_a_dead_backend_from_a_live_one(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str, dead_port: int
) -> None:
    server = shared.server
    config = cluster.root / "checked" / "node_config.toml"
    dead_base = f"http://127.0.0.1:{dead_port}/v1"
    argv = setup_argv(
        NODE, config, server.url, shared.node_key, "--node-id", f"{tag}-checked", "--model", "m"
    )
    argv += ["--litellm-model", "openai/standin-model"]

    refused = cluster.run([*argv, "--api-base", dead_base], check=False)
    assert refused.returncode == EXIT_BACKEND_UNREACHABLE
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr
    assert lines[0].startswith(
        f"openbeepboop-node: error: model m: backend unreachable: {dead_base}"
    )
    assert not config.exists()

    written = cluster.run([*argv, "--api-base", llm.base_url])
    assert "lists 1 model(s): standin-model" in written.stdout
    assert config.exists()

    checked = cluster.run([NODE, "check", "--config", str(config), "--json"])
    report = parse_json_output(checked.stdout)
    assert report["ok"] is True
    assert report["checks"][-1]["models"] == ["standin-model"]

    data = tomllib.loads(config.read_text())
    data["models"][0]["api_base"] = dead_base
    config.write_text(tomli_w.dumps(data))
    failed = cluster.run([NODE, "check", "--config", str(config)], check=False)
    assert failed.returncode == EXIT_BACKEND_UNREACHABLE
    assert failed.stdout.splitlines()[-1].startswith("FAILED model m: backend unreachable")
    assert json.dumps(shared.node_key) not in failed.stdout + failed.stderr
