"""What ``setup`` and ``check`` verify: the server takes the key, each backend answers.

- **server**: a lease watch (``wait`` 0) naming a lease no node holds, with
  the node's id and key: it needs the NODE (or ADMIN) role like every node
  call, and the server only reads (the lease comes back ``lost``). Not a
  heartbeat or a fetch: those record the node id as seen, so a setup that
  failed, or a node set up but not running, would be listed and counted
  online. Only a server older than the lease watch (its ``404``) gets the
  heartbeat naming no lease that setup used to send.
- **backend**, one per ``[[models]]`` entry: its model list
  (:func:`~openbeepboop_node.backends.list_models`: Ollama's ``/api/tags``,
  an OpenAI-compatible ``/models``). No connection, or a 401/403 (the
  provider key refused), fails the check; any other answer passes, with the
  models it lists, and says so when the configured model is not among them.

Each check becomes a :class:`CheckResult` with a ``kind`` that the command
line turns into an exit status.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from openbeepboop_schemas import LeaseRef

from openbeepboop_node.backends import (
    Backend,
    BackendSilentError,
    backend_for,
    list_models,
    open_check_session,
)
from openbeepboop_node.config import NodeConfig
from openbeepboop_node.exceptions import (
    BackendUnreachableError,
    ConfigError,
    KeyRejectedError,
    NotAQueueServerError,
    ServerRequestError,
    ServerUnavailableError,
)
from openbeepboop_node.model_routes import placeholder_key
from openbeepboop_node.queue_client import QueueClient

#: What failed: decides the exit status (docs/node.md, "Exit status").
FailureKind = Literal["config", "server", "key", "backend"]
#: How many listed model names a result line shows.
SHOWN_MODELS = 5
#: A server older than the lease watch answers it 404.
NOT_FOUND = 404
#: The lease the server check watches: no node holds it, so the server answers it lost.
PROBE_LEASE = LeaseRef(job_id="job-node-check", lease_token="node-check")  # noqa: S106


@dataclass(frozen=True)
class CheckResult:
    """One check: what was checked, whether it passed, one line saying what was seen."""

    name: str
    ok: bool
    detail: str
    #: On failure, what kind of failure it is.
    kind: FailureKind | None = None
    #: The models a backend listed (backend checks that got a list).
    models: list[str] | None = field(default=None)

    def line(self) -> str:
        """The result as one line of the ``check`` report."""
        return f"{'ok' if self.ok else 'FAILED':<7}{self.name}: {self.detail}"


async def check_server(
    config: NodeConfig, version: str | None = None, url: str | None = None
) -> CheckResult:
    """Does the server at ``url`` (default: the first URL) answer, and take the node key?

    With several URLs each is checked on its own (see :func:`run_checks`): a
    replica that refuses the key would otherwise only show once the others fail.
    """
    url = url or config.server_url
    client = QueueClient(
        url,
        config.api_key.get_secret_value(),
        config.node_id,
        version=version,
        fetch_wait=0.0,
    )
    name = "server" if len(config.all_server_urls()) == 1 else f"server {url}"
    try:
        await _take_key(client)
    except ServerUnavailableError as exc:
        return CheckResult(name, False, str(exc), "server")
    except KeyRejectedError as exc:
        return CheckResult(name, False, str(exc), "key")
    except ServerRequestError as exc:
        return CheckResult(name, False, str(exc), "config")
    finally:
        await client.aclose()
    return CheckResult(name, True, f"{url} takes the node key")


async def _take_key(client: QueueClient) -> None:
    """One node call that records nothing; a heartbeat only on a server without the watch."""
    try:
        await client.watch_leases([PROBE_LEASE], 0.0)
    except ServerRequestError as exc:
        if exc.status_code != NOT_FOUND or isinstance(exc, NotAQueueServerError):
            raise
        await client.heartbeat([], None)


async def check_backend(backend: Backend) -> CheckResult:
    """Does the model's backend answer, and which models does it list?"""
    name = f"model {backend.entry}"
    session = open_check_session()
    try:
        answer = await list_models(session, backend)
    except BackendSilentError as exc:
        return CheckResult(name, False, f"backend did not answer: {exc}", "backend")
    except BackendUnreachableError as exc:
        return CheckResult(name, False, f"backend unreachable: {exc}", "backend")
    finally:
        await session.close()
    if answer.status in (401, 403):
        return CheckResult(
            name,
            False,
            f"{answer.url} refused the provider key (HTTP {answer.status})",
            "backend",
        )
    if answer.models is None:
        return CheckResult(name, True, f"{answer.url} answers (HTTP {answer.status})")
    shown = ", ".join(answer.models[:SHOWN_MODELS])
    more = len(answer.models) - SHOWN_MODELS
    listed = f"{shown}, and {more} more" if more > 0 else shown or "none"
    detail = f"{answer.url} lists {len(answer.models)} model(s): {listed}"
    wanted = backend.upstream_model
    if wanted is not None and answer.models and not serves(answer.models, wanted):
        detail += f" (not {wanted!r}: check litellm_model)"
    return CheckResult(name, True, detail, models=answer.models)


def serves(listed: Sequence[str], wanted: str) -> bool:
    """Whether a backend listing ``listed`` has ``wanted`` (Ollama adds ``:latest``)."""
    return wanted in listed or f"{wanted}:latest" in listed


def backends_of(config: NodeConfig, environ: Mapping[str, str] | None = None) -> list[Backend]:
    """Each entry's backend, with its provider key (ConfigError if ``api_key_env`` is unset)."""
    env = os.environ if environ is None else environ
    backends = []
    for model in config.models:
        key = model.resolve_api_key(env) or placeholder_key(model, env)
        backends.append(backend_for(model, key))
    return backends


async def run_checks(
    config: NodeConfig,
    *,
    environ: Mapping[str, str] | None = None,
    version: str | None = None,
) -> list[CheckResult]:
    """Every check, at once: each server URL and each model's backend."""
    try:
        backends = backends_of(config, environ)
    except ConfigError as exc:
        return [CheckResult("config", False, str(exc), "config")]
    results = await asyncio.gather(
        *(check_server(config, version, url) for url in config.all_server_urls()),
        *(check_backend(b) for b in backends),
    )
    return list(results)
