"""The command line: batch exit codes, and a real ``openbeepboop-node run`` process.

The subprocess tests talk to a fake queue server over loopback HTTP and to the
stand-in LLM through real LiteLLM, and signal the process as an operator (or
the OOM killer) would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from click.testing import CliRunner
from conditions import wait_until
from conftest import PROVIDER_KEY
from fake_queue import (
    NODE_KEY,
    FakeQueue,
    FakeQueueServer,
    LoopbackServer,
    Received,
    Reply,
    always,
)
from openbeepboop_node.cli import main
from openbeepboop_node.cli.errors import (
    EXIT_CONFIG,
    EXIT_KEY_REFUSED,
    EXIT_SERVER_UNREACHABLE,
)
from openbeepboop_node.spool import Spool
from openbeepboop_schemas import FETCH_PATH, QUEUE_SUBMIT_PATH
from openbeepboop_testkit.standin import StandinLLM

#: How long a node process may take to start (LiteLLM's import is slow) and stop.
PROCESS_DEADLINE_SECONDS = 60.0


def write_config(path: Path, server_url: str, llm: StandinLLM, **top: Any) -> Path:
    data: dict[str, Any] = {
        "server_url": server_url,
        "api_key": NODE_KEY,
        "node_id": "cli-node",
        "concurrency": 2,
        "fetch_wait": 1.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "batch_give_up": 1.0,
        "spool_path": str(path.parent / "spool.sqlite3"),
        **top,
        "models": [
            {
                "name": "standin",
                "litellm_model": "openai/standin-model",
                "api_base": llm.base_url,
                "api_key": PROVIDER_KEY,
            }
        ],
    }
    path.write_text(tomli_w.dumps(data))
    return path


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stderr


def assert_one_line_error(stderr: str, text: str) -> None:
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("openbeepboop-node: error: ")
    assert text in last


def test_batch_drains_and_exits_zero(
    tmp_path: Path, fake: FakeQueue, served: FakeQueueServer, llm: StandinLLM
) -> None:
    ids = [fake.add_job(f"cron {i}") for i in range(5)]
    config = write_config(tmp_path / "node.toml", served.url, llm)
    code, stderr = invoke("batch", "--config", str(config))
    assert code == 0, stderr
    assert sorted(fake.results()) == ids
    assert "batch done: 5 completed" in stderr
    assert len(Spool(tmp_path / "spool.sqlite3")) == 0


@pytest.mark.parametrize("status", [400, 500])
def test_batch_whose_jobs_failed_on_their_own_merit_exits_zero(
    tmp_path: Path, fake: FakeQueue, served: FakeQueueServer, llm: StandinLLM, status: int
) -> None:
    # A failure is the job's outcome (delivered, retried by the queue if it
    # may pass); exit statuses are for a batch that could not do its work.
    llm.configure(fail_status=status)
    job = fake.add_job("doomed")
    config = write_config(tmp_path / "node.toml", served.url, llm)
    code, stderr = invoke("batch", "--config", str(config))
    assert code == 0, stderr
    assert list(fake.errors()) == [job]
    assert "batch done: 0 completed, 1 failed" in stderr


def test_batch_with_nothing_queued_exits_zero(
    tmp_path: Path, fake: FakeQueue, served: FakeQueueServer, llm: StandinLLM
) -> None:
    config = write_config(tmp_path / "node.toml", served.url, llm)
    code, stderr = invoke("batch", "--config", str(config))
    assert code == 0, stderr
    assert len(fake.fetches) == 1 and fake.fetches[0]["wait"] == 0


def test_batch_exits_non_zero_when_the_server_is_unreachable(
    tmp_path: Path, llm: StandinLLM
) -> None:
    config = write_config(tmp_path / "node.toml", closed_port_url(), llm)
    started = time.monotonic()
    code, stderr = invoke("-q", "batch", "--config", str(config))
    assert code == EXIT_SERVER_UNREACHABLE
    assert_one_line_error(stderr, "cannot connect to http://127.0.0.1:")
    assert time.monotonic() - started < 30


def test_batch_says_when_server_url_is_not_an_openbeepboop_server(
    tmp_path: Path, llm: StandinLLM
) -> None:
    # The LLM backend's own URL given as server_url: a 404 without the server's envelope.
    with LoopbackServer(always(Reply(404, text="404 page not found"))) as other:
        config = write_config(tmp_path / "node.toml", other.url, llm)
        code, stderr = invoke("-q", "batch", "--config", str(config))
    assert code == EXIT_CONFIG
    assert_one_line_error(
        stderr, f"server_url {other.url} is not an OpenBeepBoop queue server: /internal/queue/fetch"
    )
    assert "check node_id and models" not in stderr


def test_batch_exits_non_zero_when_the_key_is_refused(
    tmp_path: Path, fake: FakeQueue, served: FakeQueueServer, llm: StandinLLM
) -> None:
    fake.key = "sk-another-key"
    fake.add_job("never")
    config = write_config(tmp_path / "node.toml", served.url, llm)
    code, stderr = invoke("batch", "--config", str(config))
    assert code == EXIT_KEY_REFUSED
    assert_one_line_error(stderr, "rejected the API key")
    assert NODE_KEY not in stderr
    assert llm.calls() == []


def test_batch_exits_non_zero_when_results_cannot_be_delivered(
    tmp_path: Path, fake: FakeQueue, served: FakeQueueServer, llm: StandinLLM
) -> None:
    fake.add_job("done but stuck")
    fake.down_paths = {"/internal/queue/submit"}
    config = write_config(tmp_path / "node.toml", served.url, llm)
    code, stderr = invoke("batch", "--config", str(config))
    assert code == EXIT_SERVER_UNREACHABLE
    assert_one_line_error(stderr, "1 result(s) could not be delivered")
    assert len(Spool(tmp_path / "spool.sqlite3")) == 1


def test_batch_counts_the_results_it_delivers_from_the_spool(
    tmp_path: Path, fake: FakeQueue, served: FakeQueueServer, llm: StandinLLM
) -> None:
    job = fake.add_job("finished by the first run")
    fake.down_paths = {QUEUE_SUBMIT_PATH}
    config = write_config(tmp_path / "node.toml", served.url, llm)
    code, stderr = invoke("batch", "--config", str(config))
    assert code == EXIT_SERVER_UNREACHABLE, stderr
    fake.down_paths = set()
    code, stderr = invoke("batch", "--config", str(config))
    assert code == 0, stderr
    assert list(fake.results()) == [job]
    assert f"job {job} (from the spool) tokens=" in stderr
    assert stderr.strip().splitlines()[-1].endswith("batch done: 1 completed, 0 failed, 0 released")


def test_batch_counts_results_the_server_did_not_keep_apart(
    tmp_path: Path, fake: FakeQueue, served: FakeQueueServer, llm: StandinLLM
) -> None:
    def stale_acks(request: Received) -> Reply | None:
        if request.path != QUEUE_SUBMIT_PATH:
            return fake.respond(request)
        outcomes = request.json()["outcomes"]
        # As the server answers for a job cancelled while it ran.
        acks = [{"job_id": o["job_id"], "ack": "stale", "status": "CANCELLED"} for o in outcomes]
        return Reply(200, {"acks": acks})

    served.respond = stale_acks
    job = fake.add_job("cancelled while it ran")
    config = write_config(tmp_path / "node.toml", served.url, llm)
    code, stderr = invoke("batch", "--config", str(config))
    assert code == 0, stderr
    assert f"job {job} " in stderr and "not kept (stale: " in stderr
    assert "; the job is CANCELLED)" in stderr
    assert (
        stderr.strip()
        .splitlines()[-1]
        .endswith("batch done: 0 completed, 0 failed, 0 released, 1 not kept by the server")
    )


@pytest.mark.parametrize("command", ["run", "batch"])
def test_invalid_config_is_one_line(tmp_path: Path, command: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text('server_url = "http://x"\napi_key = "k"\nconcurrency = "many"\n')
    code, stderr = invoke(command, "--config", str(path))
    assert code == EXIT_CONFIG
    assert_one_line_error(stderr, "concurrency: Input should be a valid integer")


@pytest.mark.parametrize("command", ["run", "batch"])
def test_an_api_base_no_request_could_reach_is_a_config_error(
    tmp_path: Path, llm: StandinLLM, command: str
) -> None:
    path = write_config(tmp_path / "node.toml", "http://127.0.0.1:1", llm)
    path.write_text(path.read_text().replace(llm.base_url, "http://a b:11434"))
    code, stderr = invoke(command, "--config", str(path))
    assert code == EXIT_CONFIG
    assert_one_line_error(stderr, "models[0].api_base: Value error, must be a URL without spaces")


def test_missing_api_key_env_is_a_start_up_error(
    tmp_path: Path, llm: StandinLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    path = write_config(tmp_path / "node.toml", "http://127.0.0.1:1", llm)
    path.write_text(
        path.read_text().replace(f'api_key = "{PROVIDER_KEY}"', 'api_key_env = "NO_SUCH_KEY_VAR"')
    )
    code, stderr = invoke("run", "--config", str(path))
    assert code == EXIT_CONFIG
    assert_one_line_error(stderr, "environment variable NO_SUCH_KEY_VAR is not set")


# -- a real node process ---------------------------------------------------


def node_command() -> list[str]:
    script = Path(sys.executable).parent / "openbeepboop-node"
    if script.exists():
        return [str(script)]
    found = shutil.which("openbeepboop-node")
    return [found] if found else [sys.executable, "-m", "openbeepboop_node"]


class NodeProcess:
    def __init__(
        self, config: Path, log: Path, command: str = "run", env: dict[str, str] | None = None
    ) -> None:
        self.log = log
        self._file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*node_command(), command, "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, needle: str) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None and needle not in self.text():
                raise AssertionError(f"node exited ({self.proc.returncode}):\n{self.text()}")
            return needle in self.text()

        wait_until(seen, PROCESS_DEADLINE_SECONDS, f"{needle!r} in the node's log")

    def wait(self) -> int:
        try:
            return self.proc.wait(PROCESS_DEADLINE_SECONDS)
        finally:
            self._file.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(PROCESS_DEADLINE_SECONDS)
        self._file.close()


@pytest.fixture
def processes() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for proc in started:
        proc.stop()


def test_sigterm_releases_jobs_that_outlast_the_grace_period(
    tmp_path: Path,
    fake: FakeQueue,
    served: FakeQueueServer,
    llm: StandinLLM,
    processes: list[NodeProcess],
) -> None:
    llm.configure(delay=120)
    job_id = fake.add_job("never finishes")
    config = write_config(tmp_path / "node.toml", served.url, llm, shutdown_grace=0.5)
    node = NodeProcess(config, tmp_path / "node.log")
    processes.append(node)
    # Running, not merely leased: a lease still in flight when the signal lands
    # never reaches the node (it expires instead), which is not this test's case.
    wait_until(
        lambda: llm.prompt_counts() == {"never finishes": 1},
        PROCESS_DEADLINE_SECONDS,
        "the job's LLM call",
    )
    node.wait_for_log("concurrency 2")
    node.proc.send_signal(signal.SIGTERM)
    assert node.wait() == 0, node.text()
    assert fake.released == [job_id]
    assert [j[0] for j in fake.queued] == [job_id]  # requeued at once
    assert "Traceback" not in node.text()


def test_a_second_signal_keeps_an_unacknowledged_result_in_the_spool(
    tmp_path: Path,
    fake: FakeQueue,
    served: FakeQueueServer,
    llm: StandinLLM,
    processes: list[NodeProcess],
) -> None:
    # The server takes the result's submit and never answers; with spool_after
    # an hour away the result is only in memory when the second signal lands.
    job_id = fake.add_job("unanswered")
    fake.hung_paths = {QUEUE_SUBMIT_PATH}
    config = write_config(
        tmp_path / "node.toml", served.url, llm, shutdown_grace=120, spool_after=3600
    )
    node = NodeProcess(config, tmp_path / "node.log")
    processes.append(node)
    wait_until(
        lambda: any(path == QUEUE_SUBMIT_PATH for path, _ in fake.attempts),
        PROCESS_DEADLINE_SECONDS,
        "the result's submit",
    )
    assert len(Spool(tmp_path / "spool.sqlite3")) == 0
    node.proc.send_signal(signal.SIGINT)
    node.wait_for_log("SIGINT: ")  # the result is finished, its delivery not
    node.proc.send_signal(signal.SIGINT)
    assert node.wait() == 130
    assert [o.job_id for o in Spool(tmp_path / "spool.sqlite3").pending()] == [job_id]
    assert "1 unacknowledged result(s) kept in the spool" in node.text()
    fake.hung_paths = set()


def test_a_second_signal_exits_at_once_without_a_traceback(
    tmp_path: Path,
    fake: FakeQueue,
    served: FakeQueueServer,
    llm: StandinLLM,
    processes: list[NodeProcess],
) -> None:
    llm.configure(delay=120)
    fake.add_job("slow")
    config = write_config(tmp_path / "node.toml", served.url, llm, shutdown_grace=120)
    node = NodeProcess(config, tmp_path / "node.log")
    processes.append(node)
    wait_until(lambda: llm.prompt_counts() == {"slow": 1}, PROCESS_DEADLINE_SECONDS, "the call")
    node.proc.send_signal(signal.SIGINT)
    node.wait_for_log("SIGINT: finishing 1 job(s), then exiting")
    node.proc.send_signal(signal.SIGINT)
    code = node.wait()
    assert code == 130
    assert "SIGINT again, exiting now" in node.text()
    assert "Traceback" not in node.text()


def test_sigterm_while_litellm_imports_exits_at_once_and_claims_nothing(
    tmp_path: Path,
    fake: FakeQueue,
    served: FakeQueueServer,
    llm: StandinLLM,
    processes: list[NodeProcess],
) -> None:
    # An import that never ends stands for LiteLLM's on a starved host (a
    # minute and more): the stop must not wait for it.
    slow = tmp_path / "slow-import" / "litellm"
    slow.mkdir(parents=True)
    (slow / "__init__.py").write_text("import time\ntime.sleep(3600)\n")
    path = os.pathsep.join([str(slow.parent), os.environ.get("PYTHONPATH", "")])
    fake.add_job("waiting")
    config = write_config(tmp_path / "node.toml", served.url, llm, shutdown_grace=120)
    node = NodeProcess(config, tmp_path / "node.log", env={"PYTHONPATH": path})
    processes.append(node)
    node.wait_for_log("serving standin")

    node.proc.send_signal(signal.SIGTERM)

    assert node.wait() == 0, node.text()
    assert "SIGTERM: no jobs running; stopping" in node.text()
    assert "Traceback" not in node.text()
    assert [path for path, _ in fake.attempts if path == FETCH_PATH] == []
    assert len(fake.queued) == 1  # the job was never claimed


def test_kill_9_loses_no_result_and_sigterm_lets_the_running_job_finish(
    tmp_path: Path,
    fake: FakeQueue,
    served: FakeQueueServer,
    llm: StandinLLM,
    processes: list[NodeProcess],
) -> None:
    # 1. A result finished while the server cannot take it, then kill -9.
    job_id = fake.add_job("precious")
    fake.down_paths = {"/internal/queue/submit"}
    config = write_config(tmp_path / "node.toml", served.url, llm)
    first = NodeProcess(config, tmp_path / "first.log")
    processes.append(first)
    first.wait_for_log(f"job {job_id} model=standin attempt=1")
    first.proc.kill()
    first.wait()
    assert fake.outcomes == {}

    # 2. The next run delivers it without calling the LLM again...
    fake.down_paths = set()
    second = NodeProcess(config, tmp_path / "second.log")
    processes.append(second)
    second.wait_for_log("serving standin (openai/standin-model @ http://127.0.0.1:")
    wait_until(lambda: job_id in fake.results(), PROCESS_DEADLINE_SECONDS, "the result")
    assert llm.prompt_counts() == {"precious": 1}
    content = fake.results()[job_id]["result"]["choices"][0]["message"]["content"]
    assert content == "Echo: precious"

    # 3. ...and on SIGTERM lets a running job finish, delivers it and exits 0.
    llm.configure(delay=1.5)
    slow = fake.add_job("finish before exit")
    # Running means the LLM has the call: a lease the fake granted while the
    # reply was still on its way could be abandoned by a stop in that instant.
    wait_until(
        lambda: llm.calls_for("finish before exit"), PROCESS_DEADLINE_SECONDS, "the LLM call"
    )
    second.proc.send_signal(signal.SIGTERM)
    assert second.wait() == 0, second.text()
    assert slow in fake.results()
    assert fake.released == []
    log = first.text() + second.text()
    assert "Traceback" not in log
    assert NODE_KEY not in log and PROVIDER_KEY not in log
