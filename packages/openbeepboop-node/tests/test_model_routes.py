"""A job's model resolved once: key from file or environment, endpoint, timeout, defaults."""

from __future__ import annotations

from typing import Any

import pytest
from openbeepboop_node.config import NodeConfig, parse_config
from openbeepboop_node.exceptions import ConfigError
from openbeepboop_node.model_routes import (
    MAX_WILDCARD_ROUTES,
    PLACEHOLDER_API_KEY,
    ModelRoute,
    ModelRoutes,
)


def config(*models: dict[str, Any], **top: Any) -> NodeConfig:
    return parse_config(
        {"server_url": "http://127.0.0.1:8000", "api_key": "sk-node", "models": list(models), **top}
    )


def test_a_named_model_resolves_to_its_settings() -> None:
    routes = ModelRoutes(
        config(
            {
                "name": "gpt",
                "litellm_model": "openai/gpt-4o-mini",
                "api_key_env": "MY_KEY",
                "timeout": 30,
                "defaults": {"temperature": 0.2},
            },
            request_timeout=90,
        ),
        environ={"MY_KEY": "sk-provider"},
    )
    assert routes.route_for("gpt") == ModelRoute(
        name="gpt",
        entry="gpt",
        litellm_model="openai/gpt-4o-mini",
        api_key="sk-provider",
        api_base=None,
        timeout=30.0,
        defaults={"temperature": 0.2},
    )
    assert routes.route_for("other") is None


def test_the_node_timeout_applies_where_a_model_sets_none() -> None:
    routes = ModelRoutes(
        config({"name": "m", "litellm_model": "ollama_chat/m"}, request_timeout=90), environ={}
    )
    route = routes.route_for("m")
    assert route is not None and route.timeout == 90.0 and route.api_key is None


def test_an_unset_key_variable_fails_when_the_routes_are_made() -> None:
    model = {"name": "m", "litellm_model": "openai/m", "api_key_env": "NO_SUCH_KEY"}
    with pytest.raises(ConfigError, match="environment variable NO_SUCH_KEY is not set"):
        ModelRoutes(config(model), environ={})


def test_a_keyless_openai_compatible_server_gets_a_placeholder_key() -> None:
    model = {"name": "m", "litellm_model": "openai/m", "api_base": "http://127.0.0.1:8080/v1"}
    keyless = ModelRoutes(config(model), environ={}).route_for("m")
    assert keyless is not None and keyless.api_key == PLACEHOLDER_API_KEY
    from_env = ModelRoutes(config(model), environ={"OPENAI_API_KEY": "sk-x"}).route_for("m")
    assert from_env is not None and from_env.api_key is None  # LiteLLM reads the variable


def test_the_key_never_shows_in_a_routes_repr() -> None:
    model = {"name": "m", "litellm_model": "openai/m", "api_key": "sk-secret"}
    route = ModelRoutes(config(model), environ={}).route_for("m")
    assert route is not None and "sk-secret" not in repr(route)


def test_the_wildcard_serves_other_names_and_keeps_their_routes() -> None:
    routes = ModelRoutes(
        config(
            {"name": "llama3", "litellm_model": "ollama_chat/llama3:8b"},
            {"name": "*", "litellm_model": "ollama_chat/{model}", "timeout": 12},
        ),
        environ={},
    )
    named = routes.route_for("llama3")
    assert named is not None and named.litellm_model == "ollama_chat/llama3:8b"
    mistral = routes.route_for("mistral")
    assert mistral is not None
    assert (mistral.name, mistral.entry, mistral.litellm_model, mistral.timeout) == (
        "mistral",
        "*",  # paused and counted with the entry that serves it
        "ollama_chat/mistral",
        12.0,
    )
    assert named.entry == "llama3"
    assert routes.route_for("mistral") is mistral  # made once


def test_the_wildcard_keeps_a_bounded_number_of_routes() -> None:
    routes = ModelRoutes(config({"name": "*", "litellm_model": "x/{model}"}), environ={})
    for i in range(MAX_WILDCARD_ROUTES):
        routes.route_for(f"m{i}")
    extra = routes.route_for("one-too-many")
    assert extra is not None and extra.litellm_model == "x/one-too-many"
    assert routes.route_for("one-too-many") is not extra  # made again, not kept
    assert routes.route_for("m0") is routes.route_for("m0")
