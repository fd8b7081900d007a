"""The product's real processes on loopback, started the way an operator starts them.

A :class:`Cluster` owns a temp directory: XDG dirs and ``HOME`` inside it (so
nothing touches the real home), one config file per process, every log. The
server is ``openbeepboop-server setup --non-interactive`` + ``keys create`` +
``start`` on a SQLite file; nodes are ``openbeepboop-node setup
--non-interactive`` + ``run``; the stand-in LLM is the test kit's, as its own
process (so its CPU is not the harness's and can be measured apart).

Setting up, starting and stopping servers and nodes in an isolated environment
is the test kit's (:mod:`openbeepboop_testkit.cluster`, shared with the
integration tests); what is here is the benchmarks' own shape: a server with
its NODE and USER keys made, the stand-in process, nodes started at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx
from openbeepboop_schemas import HEALTHZ_PATH
from openbeepboop_testkit import cluster as kit
from openbeepboop_testkit.cluster import Node
from openbeepboop_testkit.processes import ManagedProcess, free_port
from openbeepboop_testkit.standin import StandinClient, standin_command

__all__ = ["MODEL", "Cluster", "Node", "Server", "Standin", "healthy"]

#: Generous: the machine is shared and LiteLLM takes seconds to import.
START_TIMEOUT = 120.0
COMMAND_TIMEOUT = 120.0
#: The model name jobs ask for, and the key nodes give LiteLLM for the stand-in.
MODEL = "bench-model"
PROVIDER_KEY = "sk-standin-provider-key"
#: Share of calls left out at each end by :meth:`Standin.steady_rate`.
STEADY_TRIM = 0.1


@dataclass
class Server(kit.Server):
    """One ``openbeepboop-server`` with its own config, SQLite file and keys."""

    node_key: str = ""
    user_key: str = ""

    def setup(self) -> str:
        """Config, database, and one ADMIN, NODE and USER key; returns the admin key."""
        admin_key = super().setup()
        self.node_key = self.create_key("NODE", "bench-nodes")
        self.user_key = self.create_key("USER", "bench-user")
        return admin_key


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

    def steady_rate(self, last: int, trim: float = STEADY_TRIM) -> float:
        """Calls per second reaching the stand-in over the middle of the last ``last`` calls.

        The first and last ``trim`` of the calls are left out: filling and
        draining the pipeline (16 calls starting at once, the last few
        finishing alone; for a node, also the bulk insert before its first
        lease and the delivery after its last call) is not the rate the
        caller sustains. Arrival times are the stand-in's own clock, so a
        node and a bare loop are timed by the same instrument.
        """
        times = sorted(call.timestamp for call in self.control.calls())[-last:]
        if len(times) < last:
            raise RuntimeError(f"the stand-in saw {len(times)} calls, expected {last}")
        first, final = int(last * trim), last - 1 - int(last * trim)
        return (final - first) / (times[final] - times[first])


class Cluster(kit.Cluster):
    """One benchmark's world: a temp dir, its environment, its processes."""

    start_timeout = START_TIMEOUT
    command_timeout = COMMAND_TIMEOUT

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._count = 0

    def server(self, name: str = "server") -> Server:
        """A server, set up (keys created) but not started."""
        self._count += 1
        server = Server(self, name, self.root / f"{name}-{self._count}", free_port())
        server.setup()
        return server

    def standin(self, delay: float = 0.0, keep_alive: float | None = None) -> Standin:
        """A stand-in LLM process answering after ``delay`` seconds."""
        self._count += 1
        port_file = self.root / f"standin-{self._count}.port"
        argv = standin_command(port_file, keep_alive=keep_alive, delay=delay)
        proc = self.procs.start("standin", argv)
        port = proc.wait_for_port_file(port_file, timeout=START_TIMEOUT)
        return Standin(proc, port)

    def node(self, server: Server, standin: Standin, node_id: str, concurrency: int) -> Node:
        """``openbeepboop-node setup --non-interactive`` then ``run`` (not waited for)."""
        node = self.setup_node(
            server,
            server.node_key,
            node_id,
            self.root / f"{node_id}.toml",
            model=MODEL,
            litellm_model="openai/standin-model",
            api_base=standin.base_url,
            concurrency=concurrency,
            more=["--model-api-key", PROVIDER_KEY],
        )
        node.run()
        return node

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
        return httpx.get(f"{url}{HEALTHZ_PATH}", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
