"""One server, one node and one stand-in LLM shared by the OpenAI-SDK tests of a module.

The server runs with short ``[openai]`` windows (a batch may ask for a
one-second ``completion_window``; running batches are looked at every 0.2 s)
so the tests of the OpenAI surface take seconds. Tests keep apart by their
own prompts, keys and files.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cluster import Cluster, Server
from openbeepboop_schemas import FETCH_PATH
from openbeepboop_testkit.processes import ProcessSet
from openbeepboop_testkit.standin import StandinLLM

MODEL = "oa-model"
#: Short enough for the expiry test, generous for a loaded two-core machine.
OPENAI_SETTINGS = {
    "min_completion_window_seconds": 1,
    "batch_check_seconds": 0.2,
    "sync_timeout_seconds": 60,
    # Small limits, so the limit tests upload kilobytes, not 200 MB.
    "max_file_bytes": 256 * 1024,
    "max_file_lines": 1000,
}


@dataclass
class OpenAIWorld:
    """The module's server, its keys, and the stand-in its node calls."""

    cluster: Cluster
    server: Server
    llm: StandinLLM
    user_key: str
    other_key: str

    @property
    def base_url(self) -> str:
        """What ``OpenAI(base_url=...)`` is given."""
        return self.server.url + "/openai/v1"

    def seen_serving(self, model: str) -> None:
        """Have a node be seen serving ``model`` that takes none of its jobs.

        A synchronous chat for a model no node serves is refused at once;
        tests of what happens while such a job waits queue it this way.
        """
        node_key = self.server.create_key("NODE", f"idle-{model}")
        seen = httpx.post(
            self.server.url + FETCH_PATH,
            json={"node_id": f"idle-{model}", "models": [model], "wait": 0},
            headers={"Authorization": f"Bearer {node_key}"},
        )
        assert seen.status_code == 200 and seen.json() == [], seen.text


def start_world(root: Path, *, node: bool = True, **openai: object) -> Iterator[OpenAIWorld]:
    """Set up and start the world (``node``: with a node); stop it all when closed."""
    procs = ProcessSet(root / "logs")
    world = Cluster(root, procs)
    try:
        with StandinLLM() as llm:
            server = world.server(lease_seconds=6, retry_backoff_seconds=0.2)
            server.edit_config("openai", **{**OPENAI_SETTINGS, **openai})
            server.start()
            node_key = server.create_key("NODE", "oa-nodes")
            user_key = server.create_key("USER", "oa-user")
            other_key = server.create_key("USER", "oa-other")
            if node:
                world.node(server, node_key, "oa-node", MODEL, "openai/m", llm.base_url, 8).run()
                server.wait_for_nodes(["oa-node"])
            yield OpenAIWorld(world, server, llm, user_key, other_key)
    except BaseException:
        procs.dump_logs(sys.stdout)
        raise
    finally:
        procs.stop_all()
        world.close()


def native_jobs(world: OpenAIWorld, key: str, **params: str) -> list[dict[str, Any]]:
    """The key's jobs as ``GET /v1/jobs`` lists them (the native API), newest first."""
    response = httpx.get(
        world.server.url + "/v1/jobs",
        params={"limit": "100", **params},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data
