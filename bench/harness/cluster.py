"""The product's real processes on loopback, started the way an operator starts them.

A :class:`Cluster` owns a temp directory: XDG dirs and ``HOME`` inside it (so
nothing touches the real home), one config file per process, every log. The
server is ``openbeepboop-server setup --non-interactive`` + ``keys create`` +
``start`` on a SQLite file; nodes are ``openbeepboop-node setup
--non-interactive`` + ``run``; the stand-in LLM is the test kit's, as its own
process (so its CPU is not the harness's and can be measured apart).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from openbeepboop_testkit.processes import ManagedProcess, ProcessSet, free_port, run_command
from openbeepboop_testkit.standin import StandinClient, standin_command

BIN = Path(sys.executable).parent
SERVER = str(BIN / "openbeepboop-server")
NODE = str(BIN / "openbeepboop-node")
KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_\-]{32,}")
#: Generous: the machine is shared and LiteLLM takes seconds to import.
START_TIMEOUT = 120.0
COMMAND_TIMEOUT = 120.0
#: The model name jobs ask for, and the key nodes give LiteLLM for the stand-in.
MODEL = "bench-model"
PROVIDER_KEY = "sk-standin-provider-key"


def base_env(root: Path) -> dict[str, str]:
    """Every process's environment: XDG dirs in ``root``, no OPENBEEPBOOP_* inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBEEPBOOP_")}
    for name in ("CONFIG", "STATE", "DATA", "CACHE"):
        path = root / "xdg" / name.lower()
        path.mkdir(parents=True, exist_ok=True)
        env[f"XDG_{name}_HOME"] = str(path)
    (root / "home").mkdir(exist_ok=True)
    env["HOME"] = str(root / "home")
    env["PYTHONUNBUFFERED"] = "1"
    # Offline: LiteLLM must not try to download its model price map.
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["NO_COLOR"] = "1"
    return env


@dataclass
class Server:
    """One ``openbeepboop-server`` with its own config, SQLite file and keys."""

    cluster: Cluster
    name: str
    dir: Path
    port: int
    admin_key: str = ""
    node_key: str = ""
    user_key: str = ""
    proc: ManagedProcess | None = None

    @property
    def config(self) -> Path:
        return self.dir / "server_config.toml"

    @property
    def database(self) -> Path:
        return self.dir / "openbeepboop.db"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not started"
        return self.proc.pid

    def cli(self, *args: str) -> str:
        """``openbeepboop-server ARGS --config ...``; its stdout."""
        argv = [SERVER, *args, "--config", str(self.config)]
        return run_command(argv, env=self.cluster.env, timeout=COMMAND_TIMEOUT).stdout

    def setup(self) -> None:
        """Config, database, and one ADMIN, NODE and USER key."""
        self.dir.mkdir(parents=True, exist_ok=True)
        out = self.cli(
            "setup",
            "--non-interactive",
            "--database-url",
            self.database_url,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        )
        match = re.search(r"Admin API Key:\s*(sk-\S+)", out)
        if match is None:
            raise RuntimeError(f"no admin key in setup's output:\n{out}")
        self.admin_key = match.group(1)
        self.node_key = self._create_key("NODE", "bench-nodes")
        self.user_key = self._create_key("USER", "bench-user")

    def _create_key(self, role: str, name: str) -> str:
        match = KEY_PATTERN.search(self.cli("keys", "create", "--role", role, "--name", name))
        if match is None:
            raise RuntimeError(f"keys create --role {role} printed no key")
        return match.group(0)

    def start(self) -> None:
        """``start``, then wait for ``/healthz``."""
        self.proc = self.cluster.procs.start(
            self.name, [SERVER, "start", "--config", str(self.config)]
        )
        self.proc.wait_for_url(f"{self.url}/healthz", timeout=START_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM (clean stop)."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc = None


@dataclass
class Standin:
    """The test kit's stand-in LLM as its own process."""

    proc: ManagedProcess
    port: int
    control: StandinClient = field(init=False)

    def __post_init__(self) -> None:
        self.control = StandinClient(self.url)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What LiteLLM's ``api_base`` is set to."""
        return f"{self.url}/v1"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def set_delay(self, delay: float) -> None:
        """Change the answer delay at run time."""
        self.control.configure(delay=delay)

    def reset(self) -> None:
        """Forget the call log (it grows with every call)."""
        self.control.reset()


@dataclass
class Node:
    """One ``openbeepboop-node run`` against the stand-in."""

    node_id: str
    config: Path
    proc: ManagedProcess

    @property
    def pid(self) -> int:
        return self.proc.pid


class Cluster:
    """One benchmark's world: a temp dir, its environment, its processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = base_env(root)
        self.procs = ProcessSet(root / "logs", self.env)
        self._count = 0

    def server(self, name: str = "server") -> Server:
        """A server, set up (keys created) but not started."""
        self._count += 1
        server = Server(self, name, self.root / f"{name}-{self._count}", free_port())
        server.setup()
        return server

    def standin(self, delay: float = 0.0) -> Standin:
        """A stand-in LLM process answering after ``delay`` seconds."""
        self._count += 1
        port_file = self.root / f"standin-{self._count}.port"
        proc = self.procs.start("standin", standin_command(port_file, delay=delay))
        port = proc.wait_for_port_file(port_file, timeout=START_TIMEOUT)
        return Standin(proc, port)

    def node(self, server: Server, standin: Standin, node_id: str, concurrency: int) -> Node:
        """``openbeepboop-node setup --non-interactive`` then ``run`` (not waited for)."""
        config = self.root / f"{node_id}.toml"
        run_command(
            [
                NODE,
                "setup",
                "--non-interactive",
                "--config",
                str(config),
                "--server-url",
                server.url,
                "--api-key",
                server.node_key,
                "--node-id",
                node_id,
                "--concurrency",
                str(concurrency),
                "--model",
                MODEL,
                "--litellm-model",
                "openai/standin-model",
                "--api-base",
                standin.base_url,
                "--model-api-key",
                PROVIDER_KEY,
            ],
            env=self.env,
            timeout=COMMAND_TIMEOUT,
        )
        proc = self.procs.start(node_id, [NODE, "run", "--config", str(config)])
        return Node(node_id, config, proc)

    def close(self) -> None:
        """Stop every process still running."""
        self.procs.stop_all()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def healthy(url: str) -> bool:
    """True if ``url/healthz`` answers 200."""
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
