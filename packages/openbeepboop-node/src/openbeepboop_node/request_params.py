"""Which fields of a job's request reach the LLM: an allow-list, never a deny-list.

A job is written by whoever holds a USER key; the LLM call is made with the
operator's endpoint and credentials. LiteLLM reads its own control arguments
(``api_base``, ``api_key``, ``mock_response``, ``metadata``, callbacks, ...)
from the same keyword arguments as the OpenAI generation parameters, so any
field passed through blindly could redirect the call or leak the operator's
key. Only the OpenAI generation parameters named here are forwarded; the
operator's settings are applied after them and always win.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openbeepboop_schemas import ChatCompletionRequest

#: OpenAI chat completion parameters a job may set. Everything else a job
#: carries (LiteLLM controls, provider routing, transport settings, ``stream``)
#: is dropped. ``service_tier``, ``store`` and ``web_search_options`` are left
#: out on purpose: they bill or store data on the operator's account. LiteLLM
#: may still drop a forwarded parameter a provider does not support.
FORWARDED_PARAMS: frozenset[str] = frozenset(
    {
        "messages",
        "temperature",
        "top_p",
        "n",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "seed",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "user",
        "reasoning_effort",
        "modalities",
        "audio",
        "prediction",
        "verbosity",
        "safety_identifier",
        "prompt_cache_key",
    }
)

#: Parameters an operator may give per-model defaults for (``messages`` is the job's own).
DEFAULTABLE_PARAMS: frozenset[str] = FORWARDED_PARAMS - {"messages"}


def job_params(
    request: ChatCompletionRequest, defaults: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The generation parameters to call the LLM with, and the names that were dropped.

    A parameter the job left out (or sent as ``null``) takes the model's
    default from the operator's config, if there is one.
    """
    params: dict[str, Any] = {}
    dropped: list[str] = []
    for name, value in request.to_payload().items():
        if name not in FORWARDED_PARAMS:
            if name not in ("model", "stream"):
                dropped.append(name)
        elif value is not None:
            params[name] = value
    if defaults:
        for name, value in defaults.items():
            params.setdefault(name, value)
    return params, dropped
