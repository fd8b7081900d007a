"""A model's own backend, reached without LiteLLM: does it answer, which models does it list.

Probing a paused model (:mod:`~openbeepboop_node.backend_health`) and the
checks of ``setup`` and ``check`` (:mod:`~openbeepboop_node.checks`) ask the
backend one cheap ``GET`` with aiohttp: LiteLLM has no "are you there" call,
and a chat completion would cost the backend a generation. Where:

- Ollama (``ollama/``, ``ollama_chat/``): ``{api_base}/api/tags``, its model
  list (``http://localhost:11434`` without ``api_base``, as LiteLLM does);
- anything else with an ``api_base`` (OpenAI-compatible servers: vLLM,
  llama.cpp, LM Studio, ...): ``{api_base}/models``, then
  ``{api_base}/v1/models`` when the base's path does not end in ``/v1``
  (the path only: a query stays after it, a host named ``v1`` is a host);
- a hosted API without ``api_base``: its public base from
  :data:`HOSTED_BASES`; a provider missing there has no probe (a paused
  model is then retried blind, after the backoff).

For a probe any HTTP answer (even 401 or 404) means "up": the backend is
there; only no connection, or no answer in time, means "down". The checks of
``setup`` and ``check`` give a backend that connects longer to answer
(:data:`CHECK_ANSWER_SECONDS`: a busy local server may be slow to list its
models) and say when one connected but did not answer (:class:`BackendSilentError`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from openbeepboop_schemas import ANY_MODEL

from openbeepboop_node.config import ModelConfig
from openbeepboop_node.exceptions import BackendUnreachableError
from openbeepboop_node.failure_causes import (
    broken_connection,
    never_connected,
    unreachable_reason,
)
from openbeepboop_node.queue_client import default_ssl_context, proxy_for

#: How long one probe may take in all (connect and answer), and a check's connect.
PROBE_TIMEOUT_SECONDS = 5.0
#: How long a check of ``setup``/``check`` waits in all for a backend's answer.
CHECK_ANSWER_SECONDS = 30.0
#: Where LiteLLM sends ``ollama/`` and ``ollama_chat/`` calls without an ``api_base``.
OLLAMA_DEFAULT_BASE = "http://localhost:11434"
OLLAMA_PROVIDERS = frozenset({"ollama", "ollama_chat"})
#: Public API bases of hosted providers (OpenAI-compatible ``/models`` lists, except
#: Anthropic's, which wants its own headers): probed when a model has no ``api_base``.
HOSTED_BASES: Mapping[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "mistral": "https://api.mistral.ai/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "together_ai": "https://api.together.xyz/v1",
    "fireworks_ai": "https://api.fireworks.ai/inference/v1",
    "xai": "https://api.x.ai/v1",
}
#: Anthropic's API refuses requests without naming its version.
ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True)
class Backend:
    """Where one ``[[models]]`` entry's LLM calls go."""

    #: The entry's name (``*`` for the wildcard).
    entry: str
    litellm_model: str
    #: The base URL the calls go to; None when unknown (no probe possible).
    base: str | None
    api_key: str | None = field(default=None, repr=False)

    @property
    def provider(self) -> str:
        """LiteLLM's provider prefix (``ollama_chat``), ``openai`` when there is none."""
        prefix, sep, _ = self.litellm_model.partition("/")
        return prefix if sep else "openai"

    @property
    def upstream_model(self) -> str | None:
        """The model name the backend knows (after the prefix); None for a wildcard."""
        if self.entry == ANY_MODEL:
            return None
        _, sep, rest = self.litellm_model.partition("/")
        return rest if sep else self.litellm_model

    def list_urls(self) -> list[str]:
        """The URLs that list the backend's models, in the order to try them."""
        if self.base is None:
            return []
        # Only the path is extended (and looked at): a host named v1
        # (http://v1) is no /v1 path, and a query (?api-version=...) stays
        # the query, after the path.
        parts = urlsplit(self.base)
        path = parts.path.rstrip("/")

        def at(suffix: str) -> str:
            return urlunsplit(parts._replace(path=path + suffix))

        if self.provider in OLLAMA_PROVIDERS:
            return [at("/api/tags")]
        urls = [at("/models")]
        if not path.endswith("/v1"):
            urls.append(at("/v1/models"))
        return urls

    @property
    def probe_url(self) -> str | None:
        """What a probe asks (any HTTP answer is "up"); None when there is nothing to ask."""
        urls = self.list_urls()
        return urls[0] if urls else None

    def headers(self) -> dict[str, str]:
        """The provider key, sent the way the provider wants it (Ollama: none)."""
        if not self.api_key or self.provider in OLLAMA_PROVIDERS:
            return {}
        if self.provider == "anthropic":
            return {"x-api-key": self.api_key, "anthropic-version": ANTHROPIC_VERSION}
        return {"Authorization": f"Bearer {self.api_key}"}


def backend_for(model: ModelConfig, api_key: str | None = None) -> Backend:
    """The backend of ``model`` (``api_key``: its resolved provider key, if any)."""
    backend = Backend(model.name, model.litellm_model, model.api_base, api_key)
    if backend.base is None:
        if backend.provider in OLLAMA_PROVIDERS:
            backend = Backend(model.name, model.litellm_model, OLLAMA_DEFAULT_BASE, api_key)
        elif backend.provider in HOSTED_BASES:
            backend = Backend(
                model.name, model.litellm_model, HOSTED_BASES[backend.provider], api_key
            )
    return backend


@dataclass(frozen=True)
class BackendAnswer:
    """What the backend said to a model-list request."""

    url: str
    status: int
    #: The model names listed; None when the answer was no model list.
    models: list[str] | None


class BackendSilentError(BackendUnreachableError):
    """The backend took the connection but gave no HTTP answer (in time, or before it broke)."""


def open_session(
    timeout: float = PROBE_TIMEOUT_SECONDS, connect: float | None = None
) -> aiohttp.ClientSession:
    """A session for probes and checks (close it): no keep-alive, a bounded wait.

    ``timeout`` bounds one request in all; ``connect``, when given, its connect alone.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=default_ssl_context(), force_close=True),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=connect),
    )


def open_check_session() -> aiohttp.ClientSession:
    """A session for the checks: 5 s to connect, :data:`CHECK_ANSWER_SECONDS` to answer."""
    return open_session(CHECK_ANSWER_SECONDS, connect=PROBE_TIMEOUT_SECONDS)


async def get(
    session: aiohttp.ClientSession, url: str, headers: Mapping[str, str] | None = None
) -> tuple[int, bytes]:
    """One GET; BackendUnreachableError (with the reason) when no HTTP answer came."""
    try:
        async with session.get(url, headers=headers, proxy=proxy_for(url)) as response:
            return response.status, await response.read()
    except aiohttp.ConnectionTimeoutError as exc:  # the session's connect timeout
        raise BackendUnreachableError(f"{url}: no connection in time") from exc
    except asyncio.TimeoutError as exc:  # the total timeout
        timeout = session.timeout
        if timeout.sock_connect is None or timeout.total is None:
            raise BackendUnreachableError(f"{url}: no answer in time") from exc
        raise BackendSilentError(f"{url}: connected, but no answer in {timeout.total:g} s") from exc
    except aiohttp.ClientError as exc:
        if never_connected(exc):
            raise BackendUnreachableError(f"{url}: {unreachable_reason(exc)}") from exc
        # Down all the same for a probe; a check words it as what it was.
        raise BackendSilentError(f"{url}: connected, but {broken_connection(exc)}") from exc


async def probe(session: aiohttp.ClientSession, backend: Backend) -> None:
    """Returns if the backend gives any HTTP answer; BackendUnreachableError if not."""
    url = backend.probe_url
    if url is None:
        raise BackendUnreachableError(f"{backend.litellm_model}: no URL to probe")
    await get(session, url, backend.headers())


async def list_models(session: aiohttp.ClientSession, backend: Backend) -> BackendAnswer:
    """Ask the backend for its models (the first URL that lists them wins).

    BackendUnreachableError when the backend gives no HTTP answer at all.
    """
    urls = backend.list_urls()
    if not urls:
        raise BackendUnreachableError(
            f"{backend.litellm_model}: no api_base, and no known URL for provider "
            f"{backend.provider!r}"
        )
    answer: BackendAnswer | None = None
    for url in urls:
        status, body = await get(session, url, backend.headers())
        answer = BackendAnswer(url, status, parse_model_list(body) if status == 200 else None)
        if answer.models is not None or status in (401, 403):
            break
    assert answer is not None
    return answer


def parse_model_list(body: bytes) -> list[str] | None:
    """Model names from an Ollama ``/api/tags`` or an OpenAI ``/models`` answer."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    items = data.get("models") if "models" in data else data.get("data")
    if not isinstance(items, list):
        return None
    names = []
    for item in items:
        if isinstance(item, dict):
            name = item.get("id") or item.get("name") or item.get("model")
            if isinstance(name, str):
                names.append(name)
    return names
