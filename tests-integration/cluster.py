"""The product's real processes, driven the way an operator and a user drive them.

:class:`Cluster` owns one test's world: a temp directory with a config dir per
process, the environment every command runs in (XDG dirs inside the temp dir,
no OPENBEEPBOOP_* leaking in from the developer's shell), and the processes it
started, whose logs the conftest prints when a test fails. Everything is done
through the installed console scripts (``openbeepboop-server``, ``-node``,
``-client``) and plain HTTP, never by importing a package's internals.

The setup, start, stop and kill of servers and nodes and the isolated
environment are the test kit's (:mod:`openbeepboop_testkit.cluster`, shared
with the benchmarks); what is here is what only the tests need: queue settings
in ``[queue]``, the provider key in the node's environment, clients, and the
HTTP API as a test user calls it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
import tomli_w
from openbeepboop_schemas import (
    BULK_SUBMIT_PATH,
    CHAT_COMPLETIONS_PATH,
    MAX_BULK_SUBMIT,
    POLL_PATH,
    job_cancel_path,
    job_path,
)
from openbeepboop_testkit import cluster as kit
from openbeepboop_testkit.cluster import CLIENT, CLIENT_CONFIG, NODE, NODE_CONFIG, SERVER, Node
from openbeepboop_testkit.processes import ProcessSet, free_port, wait_until

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "CLIENT",
    "NODE",
    "SERVER",
    "Api",
    "Cluster",
    "Node",
    "Server",
    "parse_json_output",
    "tune",
]

TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
#: Long-poll wait used when waiting for jobs (well under the 30 s cap).
POLL_WAIT_SECONDS = 5.0
#: Generous deadlines: this runs on a shared two-core machine.
START_TIMEOUT = 90.0
JOB_TIMEOUT = 180.0
COMMAND_TIMEOUT = 120.0
#: Key the nodes give LiteLLM for the stand-in (the "provider" key).
PROVIDER_KEY = "sk-provider-standin-key"


class Server(kit.Server):
    """One ``openbeepboop-server`` with its own config and port.

    Its database is a SQLite file in its own directory, unless
    :meth:`Cluster.server` was given a ``database_url`` (PostgreSQL, shared by
    replicas: :meth:`Cluster.replica`).
    """

    cluster: Cluster
    #: The database the server was set up on, when it is not the SQLite file in :attr:`dir`.
    shared_database_url: str | None = None

    @property
    def database_url(self) -> str:
        return self.shared_database_url or super().database_url

    def setup(self, **queue: Any) -> str:
        """``setup --non-interactive``, then the ``[queue]`` settings; returns the admin key."""
        admin_key = super().setup()
        if queue:
            self.edit_config("queue", **queue)
        return admin_key

    def edit_config(self, section: str, **values: Any) -> None:
        """Change settings in ``server_config.toml`` (as an operator would with an editor)."""
        data = tomllib.loads(self.config.read_text())
        data.setdefault(section, {}).update(values)
        self.config.write_text(tomli_w.dumps(data))

    def wait_for_nodes(self, node_ids: Iterable[str], timeout: float = START_TIMEOUT) -> None:
        """Wait until ``openbeepboop-server nodes`` lists every one of ``node_ids``."""
        wanted = set(node_ids)

        def listed() -> bool:
            out = self.cli("nodes").stdout
            return all(re.search(rf"(?<![\w.-]){re.escape(n)}(?![\w.-])", out) for n in wanted)

        wait_until(listed, timeout, f"nodes {sorted(wanted)} to be seen by the server")

    def long_polls(self, kind: str) -> float:
        """Long-polls of ``kind`` (``poll``, ``fetch``, ``lease_watch``) waiting in it now."""
        text = httpx.get(
            f"{self.url}/metrics", headers={"Authorization": f"Bearer {self.admin_key}"}
        ).text
        for line in text.splitlines():
            if line.startswith(f'openbeepboop_long_polls{{kind="{kind}"}}'):
                return float(line.split()[-1])
        return 0.0


class Api:
    """The HTTP API as a test user calls it (docs/api.md, 'Users'); paths from the schemas."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )

    def close(self) -> None:
        self.http.close()

    def submit(self, prompt: str, model: str, **extra: Any) -> str:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}
        response = self.http.post(CHAT_COMPLETIONS_PATH, json=body)
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["id"].startswith("job-") and job["status"] == "QUEUED", job
        return str(job["id"])

    def submit_many(self, prompts: Sequence[str], model: str) -> list[str]:
        ids: list[str] = []
        for start in range(0, len(prompts), MAX_BULK_SUBMIT):
            requests = [
                {"model": model, "messages": [{"role": "user", "content": prompt}]}
                for prompt in prompts[start : start + MAX_BULK_SUBMIT]
            ]
            response = self.http.post(BULK_SUBMIT_PATH, json={"requests": requests})
            assert response.status_code == 202, response.text
            ids += [job["id"] for job in response.json()["data"]]
        assert len(ids) == len(prompts)
        return ids

    def poll(self, ids: Sequence[str], wait: float | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"ids": list(ids)}
        if wait is not None:
            body["wait"] = wait
        response = self.http.post(POLL_PATH, json=body, timeout=(wait or 0) + 60)
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()
        # One entry per distinct id, in the order each was first named.
        assert [entry["id"] for entry in entries] == list(dict.fromkeys(ids))
        return entries

    def get(self, job_id: str) -> httpx.Response:
        return self.http.get(job_path(job_id))

    def cancel(self, job_id: str) -> httpx.Response:
        return self.http.post(job_cancel_path(job_id))

    def entry(self, job_id: str) -> dict[str, Any]:
        return self.poll([job_id])[0]

    def wait_for_status(
        self, job_id: str, statuses: Iterable[str], timeout: float = JOB_TIMEOUT
    ) -> dict[str, Any]:
        """Poll (short waits) until the job is in one of ``statuses``."""
        wanted = set(statuses)

        def reached() -> dict[str, Any] | None:
            entry = self.poll([job_id], wait=1.0 if wanted <= TERMINAL else None)[0]
            return entry if entry["status"] in wanted else None

        return wait_until(reached, timeout, f"{job_id} to reach {sorted(wanted)}")

    def wait_terminal(
        self, ids: Sequence[str], timeout: float = JOB_TIMEOUT
    ) -> dict[str, dict[str, Any]]:
        """Long-poll until every job is terminal; returns the entries by id."""
        done: dict[str, dict[str, Any]] = {}
        pending = list(ids)

        def all_done() -> bool:
            nonlocal pending
            for start in range(0, len(pending), 1000):
                for entry in self.poll(pending[start : start + 1000], wait=POLL_WAIT_SECONDS):
                    if entry["status"] in TERMINAL:
                        done[entry["id"]] = entry
            pending = [job_id for job_id in pending if job_id not in done]
            return not pending

        wait_until(
            all_done, timeout, lambda: f"{len(pending)} of {len(ids)} jobs to finish", interval=0
        )
        return done


class Cluster(kit.Cluster):
    """Servers, nodes and clients of one test, in one temp directory."""

    start_timeout = START_TIMEOUT
    command_timeout = COMMAND_TIMEOUT
    # The nodes' provider key comes from each node's own environment.
    dropped_env = ("OPENAI_API_KEY", "OPENAI_BASE_URL")

    def __init__(self, root: Path, procs: ProcessSet) -> None:
        super().__init__(root, procs)
        self.apis: list[Api] = []
        self._servers = 0

    def server(self, database_url: str | None = None, **queue: Any) -> Server:
        """A configured (not started) server; ``queue`` settings go into its ``[queue]``.

        ``database_url``: set it up on that database (e.g. a fresh PostgreSQL
        one from the ``postgres_url`` fixture) instead of a SQLite file of its own.
        """
        server = Server(self, *self._next_name_and_dir(), free_port())
        server.shared_database_url = database_url
        server.setup(**queue)
        return server

    def replica(self, server: Server, **settings: Any) -> Server:
        """Another server process on ``server``'s database (not started).

        Set up the way an operator adds a replica: a copy of ``server``'s
        config (same database, same ``[queue]`` settings) with its own port;
        ``setup`` is not run again, as the database is set up already. Its
        admin key is ``server``'s. ``settings`` are ``{section: {key: value}}``
        changes for this replica only, e.g. ``server={"max_wait_seconds": 5}``.
        """
        name, directory = self._next_name_and_dir()
        replica = Server(self, name, directory, free_port(), admin_key=server.admin_key)
        replica.shared_database_url = server.database_url
        directory.mkdir(parents=True, exist_ok=True)
        replica.config.write_text(server.config.read_text())
        replica.edit_config("server", port=replica.port)
        for section, values in settings.items():
            replica.edit_config(section, **values)
        return replica

    def _next_name_and_dir(self) -> tuple[str, Path]:
        self._servers += 1
        name = "server" if self._servers == 1 else f"server{self._servers}"
        return name, self.root / name

    def node(
        self,
        server: Server,
        key: str,
        node_id: str,
        model: str,
        litellm_model: str,
        api_base: str,
        concurrency: int = 4,
        provider_key: str = PROVIDER_KEY,
        more: Sequence[str] = (),
    ) -> Node:
        """``openbeepboop-node setup --non-interactive`` for one model (``more``: extra flags).

        Setup checks the server, the key and the backend first: a test that
        points a node at something that is down on purpose passes ``--no-check``.
        """
        # LiteLLM's openai/ provider wants a key; the node's environment is
        # where an operator keeps one (api_key_env, default OPENAI_API_KEY: docs/node.md,
        # 'node_config.toml').
        return self.setup_node(
            server,
            key,
            node_id,
            self.root / "nodes" / node_id / NODE_CONFIG,
            model=model,
            litellm_model=litellm_model,
            api_base=api_base,
            concurrency=concurrency,
            more=more,
            env={"OPENAI_API_KEY": provider_key},
        )

    def client_config(self, server: Server, key: str, name: str = "client") -> Path:
        """``openbeepboop-client setup --non-interactive``; returns the config path."""
        return self.setup_client(server, key, self.root / "clients" / name / CLIENT_CONFIG)

    def client(self, *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT) -> Any:
        """Run ``openbeepboop-client ARGS``."""
        return self.run([CLIENT, *args], check=check, timeout=timeout)

    def api(self, server: Server, key: str) -> Api:
        api = Api(server.url, key)
        self.apis.append(api)
        return api

    def close(self) -> None:
        for api in self.apis:
            api.close()


def tune(config: Path, **values: object) -> None:
    """Change top-level settings of a node_config.toml, as an operator would."""
    data = tomllib.loads(config.read_text())
    data.update(values)
    config.write_text(tomli_w.dumps(data))


def parse_json_output(text: str) -> Any:
    """The JSON a command printed (the whole of stdout)."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise AssertionError(f"not JSON:\n{text}") from exc
