"""A real ``openbeepboop-server start`` process: durability across kill -9, clean stops, GC.

Each test starts the server as a subprocess on a free loopback port and waits
for ``/healthz`` with a generous deadline (the machine is shared), never a
fixed sleep. Output goes to a file in ``tmp_path`` and is shown on failure.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from openbeepboop_schemas import Role
from openbeepboop_server.cli import main
from openbeepboop_server.config import load_settings, sqlite_url, write_private_file
from openbeepboop_server.db.database import Database
from openbeepboop_server.keys import KeyService
from prometheus_client.parser import text_string_to_metric_families

from tests.support.surface import bearer, chat, free_port, server_command

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass
class Server:
    config: Path
    log: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *server_command(),
                    "start",
                    "--config",
                    str(self.config),
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.process.returncode}:\n{self.output()}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not healthy within {START_TIMEOUT}s:\n{self.output()}")

    def signal(self, sig: signal.Signals) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"server did not stop on {sig.name}:\n{self.output()}") from None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def set_up_server(
    tmp_path: Path, database_url: str, make_keys: Callable[[KeyService], dict[str, str]]
) -> Iterator[Server]:
    """``setup --non-interactive`` on ``database_url``, the keys ``make_keys`` creates,
    then the (not started) server; killed at the end if still running."""
    config = tmp_path / "server_config.toml"
    result = CliRunner().invoke(
        main,
        ["setup", "--config", str(config), "--database-url", database_url, "--non-interactive"],
    )
    assert result.exit_code == 0, result.output
    db = Database.connect(load_settings(config).database.url)
    try:
        made = make_keys(KeyService(db))
    finally:
        db.dispose()
    instance = Server(config=config, log=tmp_path / "server.log", keys=made)
    yield instance
    if instance.process is not None and instance.process.poll() is None:
        instance.process.kill()
        instance.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    def one_per_role(keys: KeyService) -> dict[str, str]:
        return {role.value: keys.create(role, f"{role.value.lower()}-key")[0] for role in Role}

    yield from set_up_server(tmp_path, sqlite_url(tmp_path / "queue.db"), one_per_role)


def test_kill_9_loses_no_accepted_job_and_no_lease(server: Server) -> None:
    # A short lease, so the server's down time is longer than the lease itself.
    settings = load_settings(server.config)
    settings.queue.lease_seconds = 1
    write_private_file(server.config, settings.to_toml())
    server.start()
    user, node = bearer(server.keys["USER"]), bearer(server.keys["NODE"])

    working = httpx.post(f"{server.url}/v1/chat/completions", json=chat("busy"), headers=user)
    [lease] = httpx.post(
        f"{server.url}/internal/queue/fetch",
        json={"node_id": "n", "models": ["busy"]},
        headers=node,
    ).json()
    assert lease["job_id"] == working.json()["id"]
    submitted = httpx.post(f"{server.url}/v1/chat/completions", json=chat("llama3"), headers=user)
    assert submitted.status_code == 202
    job_id = submitted.json()["id"]

    assert server.signal(signal.SIGKILL) == -signal.SIGKILL
    # Stay down until the lease has run out by the clock...
    while time.time() < lease["lease_expires_at"] + 0.5:
        time.sleep(0.1)
    # ...and come back with a lease period long enough for a loaded machine to
    # send the heartbeat in time: the restart grace gives a full new period.
    settings.queue.lease_seconds = 60
    write_private_file(server.config, settings.to_toml())
    server.start()

    # The 202 job is there, queued, and claimable.
    entry = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=user).json()
    assert entry["status"] == "QUEUED"
    leases = httpx.post(
        f"{server.url}/internal/queue/fetch",
        json={"node_id": "after-crash", "models": ["llama3"]},
        headers=node,
    ).json()
    assert [item["job_id"] for item in leases] == [job_id]
    # The lease held across the crash was not expired by the down time.
    beat = httpx.post(
        f"{server.url}/internal/queue/heartbeat",
        json={
            "node_id": "n",
            "leases": [{"job_id": lease["job_id"], "lease_token": lease["lease_token"]}],
        },
        headers=node,
    ).json()
    assert beat["extended"] == [lease["job_id"]], beat


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_answers_long_polls_and_exits_zero(server: Server, sig: signal.Signals) -> None:
    server.start()
    answers: list[httpx.Response] = []

    def wait_for_jobs() -> None:
        answers.append(
            httpx.post(
                f"{server.url}/internal/queue/fetch",
                json={"node_id": "n", "models": ["m"], "wait": 30},
                headers=bearer(server.keys["NODE"]),
                timeout=60,
            )
        )

    waiting = threading.Thread(target=wait_for_jobs)
    waiting.start()
    # The fetch's first claim records the node: from then on it is waiting.
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and not _fetch_waiting(server):
        time.sleep(0.05)
    started = time.monotonic()
    code = server.signal(sig)
    waiting.join(timeout=STOP_TIMEOUT)
    assert code == 0, server.output()
    assert time.monotonic() - started < 25, "the stop waited for the long-poll to run out"
    assert answers and answers[0].status_code == 200 and answers[0].json() == []
    assert "Traceback" not in server.output()


def _fetch_waiting(server: Server) -> bool:
    # Node-registry side effect of the fetch's first claim: the node is "seen".
    metrics = httpx.get(f"{server.url}/metrics", headers=bearer(server.keys["ADMIN"])).text
    return "openbeepboop_nodes_seen 1.0" in metrics


def test_start_freezes_its_start_up_heap_and_counts_collector_pauses(server: Server) -> None:
    server.start()
    user = bearer(server.keys["USER"])
    for index in range(20):  # enough allocation for young collections
        assert httpx.post(f"{server.url}/v1/chat/completions", json=chat(), headers=user).is_success
        httpx.get(f"{server.url}/v1/jobs", params={"limit": index + 1}, headers=user)
    text = httpx.get(f"{server.url}/metrics", headers=bearer(server.keys["ADMIN"])).text
    families = {family.name: family for family in text_string_to_metric_families(text)}

    # SQLAlchemy, pydantic, Starlette and the app: tens of thousands of objects.
    [frozen] = families["openbeepboop_gc_frozen_objects"].samples
    assert frozen.value > 10_000
    pauses = {
        (sample.name, sample.labels["generation"], sample.labels.get("le")): sample.value
        for sample in families["openbeepboop_gc_pause_seconds"].samples
    }
    for generation in ("0", "1", "2"):
        count = pauses[("openbeepboop_gc_pause_seconds_count", generation, None)]
        assert count == pauses[("openbeepboop_gc_pause_seconds_bucket", generation, "+Inf")]
    # The full collection made just before the freeze was counted, and requests made young ones.
    assert pauses[("openbeepboop_gc_pause_seconds_count", "2", None)] >= 1
    assert pauses[("openbeepboop_gc_pause_seconds_count", "0", None)] >= 1
