"""What a job's LLM call runs on: its model resolved once into a :class:`ModelRoute`.

Every ``[[models]]`` entry becomes one route when the node starts: the
LiteLLM model string, the provider key (from the file, or the environment
variable ``api_key_env`` names: an unset one is a start-up error, not a job
failure), the endpoint, the timeout with the node's default filled in, and
the generation defaults, fixed values and caps, and whether media URLs
may pass (:mod:`~openbeepboop_node.request_guard`). A job finds its route
with one dictionary lookup.
A ``name = "*"`` entry serves every other name: its route for a name is made
the first time a job asks for that name and kept (for up to
:data:`MAX_WILDCARD_ROUTES` names).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from openbeepboop_schemas import ANY_MODEL

from openbeepboop_node.config import ModelConfig, NodeConfig

#: Sent as the key to a keyless OpenAI-compatible server (see placeholder_key).
PLACEHOLDER_API_KEY = "no-key"
#: How many job model names a ``*`` entry keeps a route for; beyond that a
#: route is made per job (a client can ask for any number of names).
MAX_WILDCARD_ROUTES = 1024


@dataclass(frozen=True)
class ModelRoute:
    """Everything one LLM call needs besides the job's own request."""

    #: The model name the job asked for.
    name: str
    #: The ``[[models]]`` entry serving it (``*`` for the wildcard's names):
    #: what per-model concurrency and a paused backend are counted by.
    entry: str
    #: What LiteLLM is called with (``ollama_chat/llama3``).
    litellm_model: str
    #: The provider key, or None to let LiteLLM find one in the environment.
    api_key: str | None = field(repr=False)
    #: The model server's URL, or None for the provider's own.
    api_base: str | None
    #: Seconds the call may take.
    timeout: float
    #: Generation parameters used where the job sets none.
    defaults: Mapping[str, Any]
    #: Generation parameters the operator fixed: they replace the job's.
    fixed: Mapping[str, Any] = field(default_factory=dict)
    #: The operator's ceiling on ``max_tokens`` / ``max_completion_tokens``.
    max_tokens: int | None = None
    #: The operator's ceiling on ``n``.
    max_n: int | None = None
    #: Whether jobs may carry media URLs (public http(s) only) LiteLLM may fetch.
    allow_media_urls: bool = False
    #: Fields outside OpenAI's a job may send to this model's server (``extra_params``).
    extra_params: frozenset[str] = frozenset()


def placeholder_key(model: ModelConfig, environ: Mapping[str, str]) -> str | None:
    """The dummy key for a keyless ``openai/`` server with an ``api_base``, else None.

    A local OpenAI-compatible server (llama.cpp, ...) wants no key, but the
    OpenAI client refuses to send a request without one. LiteLLM fills in a
    dummy for ``hosted_vllm/`` and ``lm_studio/``; the same is done here for
    ``openai/`` with an ``api_base`` when no key is configured anywhere.
    """
    if (
        model.litellm_model.startswith("openai/")
        and model.api_base is not None
        and not environ.get("OPENAI_API_KEY")
    ):
        return PLACEHOLDER_API_KEY
    return None


def resolve_route(
    config: NodeConfig, model: ModelConfig, environ: Mapping[str, str] | None = None
) -> ModelRoute:
    """``model``'s route; ConfigError if its ``api_key_env`` is not set."""
    env = os.environ if environ is None else environ
    return ModelRoute(
        name=model.name,
        entry=model.name,
        litellm_model=model.litellm_model,
        api_key=model.resolve_api_key(env) or placeholder_key(model, env),
        api_base=model.api_base,
        timeout=config.timeout_for(model),
        defaults=model.defaults,
        fixed=model.fixed,
        max_tokens=model.max_tokens,
        max_n=model.max_n,
        allow_media_urls=model.allow_media_urls,
        extra_params=frozenset(model.extra_params),
    )


class ModelRoutes:
    """The node's configured models, resolved; :meth:`route_for` is the per-job lookup."""

    def __init__(self, config: NodeConfig, environ: Mapping[str, str] | None = None) -> None:
        self._routes: dict[str, ModelRoute] = {}
        self._wildcard: tuple[ModelConfig, ModelRoute] | None = None
        #: Each entry's own route, by entry name (the wildcard's with ``{model}`` in it).
        self.entries: dict[str, ModelRoute] = {}
        for model in config.models:
            route = resolve_route(config, model, environ)
            self.entries[model.name] = route
            if model.name == ANY_MODEL:
                self._wildcard = (model, route)
            else:
                self._routes[model.name] = route
        self._named = len(self._routes)

    def route_for(self, job_model: str) -> ModelRoute | None:
        """The route for a job asking for ``job_model``; None if no entry serves it."""
        route = self._routes.get(job_model)
        if route is not None or self._wildcard is None:
            return route
        model, template = self._wildcard
        route = dataclasses.replace(
            template, name=job_model, litellm_model=model.litellm_model_for(job_model)
        )
        if len(self._routes) - self._named < MAX_WILDCARD_ROUTES:
            self._routes[job_model] = route
        return route
