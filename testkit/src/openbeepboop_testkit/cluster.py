"""The product's real processes on loopback, set up the way an operator sets them up.

Shared by the integration tests, the benchmarks and (for its environment) the
demo. A :class:`Cluster` owns a temp directory: XDG dirs and ``HOME`` inside
it, no ``OPENBEEPBOOP_*`` variable inherited from the developer's shell, one
config file per process, and the processes it started. Everything goes through
the installed console scripts (``openbeepboop-server``, ``-node``,
``-client`` next to this interpreter), never a package's internals, so what is
exercised is exactly what users install.

What differs between users (where configs live, how a node gets its provider
key, which keys a server is given) stays with them: subclass :class:`Cluster`,
:class:`Server` or :class:`Node`, or pass arguments.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from openbeepboop_testkit.processes import ManagedProcess, ProcessSet, run_command

BIN = Path(sys.executable).parent
#: The console scripts of the five wheels installed in this interpreter's venv.
SERVER = str(BIN / "openbeepboop-server")
NODE = str(BIN / "openbeepboop-node")
CLIENT = str(BIN / "openbeepboop-client")

#: The file names ``setup`` of each program writes: one config per process (docs/server.md,
#: docs/node.md and docs/client.md, each under its ``setup`` command).
SERVER_CONFIG = "server_config.toml"
NODE_CONFIG = "node_config.toml"
CLIENT_CONFIG = "client_config.toml"
DATABASE = "openbeepboop.db"

#: An API key as ``keys create`` (and ``setup``) print it.
KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_\-]{32,}")
#: The line ``openbeepboop-server setup`` prints the ADMIN key on, once.
ADMIN_KEY_PATTERN = re.compile(r"Admin API Key:\s*(sk-\S+)")

#: Generous deadlines: a shared two-core machine, and LiteLLM takes seconds to import.
START_TIMEOUT_SECONDS = 120.0
COMMAND_TIMEOUT_SECONDS = 120.0


class MissingOutputError(AssertionError):
    """A command did not print what it always prints (a key): an assertion, so pytest shows it."""


def isolated_env(
    root: Path,
    *,
    home: bool = True,
    no_color: bool = True,
    drop: Iterable[str] = (),
) -> dict[str, str]:
    """This process's environment with every config, state and cache dir inside ``root``.

    ``XDG_CONFIG_HOME``, ``XDG_STATE_HOME``, ``XDG_DATA_HOME`` and
    ``XDG_CACHE_HOME`` (and, with ``home``, ``HOME``) point below ``root`` and
    exist, so nothing reads or writes the real home; no ``OPENBEEPBOOP_*``
    variable (nor any name in ``drop``) is inherited, so a developer's own
    settings cannot change what runs. LiteLLM is told to use its bundled model
    price map: the node stays offline. ``no_color`` sets ``NO_COLOR`` for
    output that is read back as text.
    """
    dropped = set(drop)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("OPENBEEPBOOP_") and key not in dropped
    }
    for name in ("CONFIG", "STATE", "DATA", "CACHE"):
        path = root / "xdg" / name.lower()
        path.mkdir(parents=True, exist_ok=True)
        env[f"XDG_{name}_HOME"] = str(path)
    if home:
        (root / "home").mkdir(parents=True, exist_ok=True)
        env["HOME"] = str(root / "home")
    env["PYTHONUNBUFFERED"] = "1"
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    if no_color:
        env["NO_COLOR"] = "1"
    return env


def find_key(text: str) -> str:
    """The first ``sk-...`` key in a command's output."""
    match = KEY_PATTERN.search(text)
    if match is None:
        raise MissingOutputError(f"no key (sk-...) in the output:\n{text}")
    return match.group(0)


def find_admin_key(text: str) -> str:
    """The key on the ``Admin API Key: sk-...`` line ``openbeepboop-server setup`` prints."""
    match = ADMIN_KEY_PATTERN.search(text)
    if match is None:
        raise MissingOutputError(f"no 'Admin API Key: sk-...' line in:\n{text}")
    return match.group(1)


def setup_argv(program: str, config: Path, server_url: str, api_key: str, *more: str) -> list[str]:
    """``PROGRAM setup --non-interactive`` for a node or a client, pointed at a server."""
    return [
        program,
        "setup",
        "--non-interactive",
        "--config",
        str(config),
        "--server-url",
        server_url,
        "--api-key",
        api_key,
        *more,
    ]


def _started(proc: ManagedProcess | None, what: str) -> ManagedProcess:
    """The process of a server or node, which must have been started by now."""
    if proc is None:
        raise RuntimeError(f"{what} was never started")
    return proc


class Cluster:
    """One test's or benchmark's world: a temp dir, its environment, its processes.

    Subclasses tune the class attributes: the deadlines and the extra
    variables kept out of the environment.
    """

    #: How long ``start`` waits for a server's ``/healthz``.
    start_timeout: float = START_TIMEOUT_SECONDS
    #: How long a one-shot command may take.
    command_timeout: float = COMMAND_TIMEOUT_SECONDS
    #: Variables not inherited besides ``OPENBEEPBOOP_*``.
    dropped_env: tuple[str, ...] = ()

    def __init__(self, root: Path, procs: ProcessSet | None = None) -> None:
        self.root = root
        self.env = isolated_env(root, drop=self.dropped_env)
        if procs is None:
            procs = ProcessSet(root / "logs", self.env)
        else:
            # Processes started straight through ``procs`` get the same isolated env.
            procs.env = self.env
        self.procs = procs

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """A one-shot command in this world's environment (plus ``env``)."""
        return run_command(
            argv,
            env={**self.env, **(env or {})},
            timeout=self.command_timeout if timeout is None else timeout,
            check=check,
        )

    def setup_node(
        self,
        server: Server,
        key: str,
        node_id: str,
        config: Path,
        *,
        model: str,
        litellm_model: str,
        api_base: str,
        concurrency: int,
        more: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> Node:
        """``openbeepboop-node setup --non-interactive`` for one model (not started).

        ``env`` is added to the node's environment when it runs (e.g. the
        provider key, where an operator keeps it); ``more`` goes on the
        ``setup`` command line.
        """
        config.parent.mkdir(parents=True, exist_ok=True)
        self.run(
            setup_argv(
                NODE,
                config,
                server.url,
                key,
                "--node-id",
                node_id,
                "--concurrency",
                str(concurrency),
                "--model",
                model,
                "--litellm-model",
                litellm_model,
                "--api-base",
                api_base,
                *more,
            )
        )
        return Node(self, node_id, config, env=dict(env or {}))

    def setup_client(self, server: Server, key: str, config: Path) -> Path:
        """``openbeepboop-client setup --non-interactive``; returns ``config``."""
        config.parent.mkdir(parents=True, exist_ok=True)
        self.run(setup_argv(CLIENT, config, server.url, key))
        return config


@dataclass
class Server:
    """One ``openbeepboop-server`` with its own directory (config, SQLite file) and port."""

    cluster: Cluster
    name: str
    dir: Path
    port: int
    admin_key: str = ""
    proc: ManagedProcess | None = None

    @property
    def config(self) -> Path:
        return self.dir / SERVER_CONFIG

    @property
    def database(self) -> Path:
        return self.dir / DATABASE

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self._started().pid

    def _started(self) -> ManagedProcess:
        return _started(self.proc, self.name)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``openbeepboop-server ARGS --config ...`` to completion."""
        return self.cluster.run([SERVER, *args, "--config", str(self.config)], check=check)

    def setup(self) -> str:
        """``setup --non-interactive`` on a SQLite file in :attr:`dir`; returns the admin key."""
        self.dir.mkdir(parents=True, exist_ok=True)
        done = self.cli(
            "setup",
            "--non-interactive",
            "--database-url",
            self.database_url,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        )
        self.admin_key = find_admin_key(done.stdout)
        return self.admin_key

    def create_key(self, role: str, name: str) -> str:
        """``keys create``; returns the printed key."""
        return find_key(self.cli("keys", "create", "--role", role, "--name", name).stdout)

    def start(self) -> ManagedProcess:
        """``start``, then wait until ``/healthz`` answers."""
        self.proc = self.cluster.procs.start(
            self.name, [SERVER, "start", "--config", str(self.config)], env=self.cluster.env
        )
        self.proc.wait_for_url(f"{self.url}/healthz", timeout=self.cluster.start_timeout)
        return self.proc

    def stop(self) -> int:
        """SIGTERM (a clean stop); returns the exit status."""
        return self._started().terminate()

    def kill(self) -> int:
        """SIGKILL, like a crash."""
        return self._started().kill()


@dataclass
class Node:
    """One ``openbeepboop-node`` configured by ``setup --non-interactive``."""

    cluster: Cluster
    node_id: str
    config: Path
    #: Added to the cluster's environment when the node runs.
    env: dict[str, str] = field(default_factory=dict)
    proc: ManagedProcess | None = None

    @property
    def pid(self) -> int:
        return self._started().pid

    def _started(self) -> ManagedProcess:
        return _started(self.proc, f"node {self.node_id}")

    def run(self) -> ManagedProcess:
        """Start the ``run`` daemon (not waited for)."""
        self.proc = self.cluster.procs.start(
            self.node_id,
            [NODE, "run", "--config", str(self.config)],
            env={**self.cluster.env, **self.env},
        )
        return self.proc

    def batch(self, check: bool = False) -> subprocess.CompletedProcess[str]:
        """``batch`` to completion."""
        return self.cluster.run(
            [NODE, "batch", "--config", str(self.config)], env=self.env, check=check
        )

    def stop(self) -> int:
        """SIGTERM (a clean stop); returns the exit status."""
        return self._started().terminate()

    def kill(self) -> int:
        """SIGKILL, like a crash."""
        return self._started().kill()
