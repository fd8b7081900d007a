"""Which fields of a job's request reach the LLM: an allow-list, never a deny-list.

A job is written by whoever holds a USER key; the LLM call is made with the
operator's endpoint and credentials. LiteLLM reads its own control arguments
(``api_base``, ``api_key``, ``mock_response``, ``metadata``, callbacks, ...)
from the same keyword arguments as the OpenAI generation parameters, so any
field passed through blindly could redirect the call or leak the operator's
key. Only the OpenAI generation parameters named here are forwarded; the
operator's settings are applied after them and always win.

The operator shapes what is forwarded per model, in this order: ``defaults``
fill what the job left unset (``max_tokens`` and ``max_completion_tokens``
count as one: a default for either is not added beside the job's other);
``fixed`` values replace the job's; then the caps: ``max_tokens`` lowers a
larger ``max_tokens`` or ``max_completion_tokens`` to the cap (and is sent
as ``max_tokens`` when neither is set, so every call has a ceiling),
``max_n`` lowers a larger ``n``. A job asking for more is not failed: it gets the operator's value,
as it would from a provider whose limit is lower.
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


#: The parameters a ``max_tokens`` cap bounds.
TOKEN_LIMIT_PARAMS = ("max_tokens", "max_completion_tokens")


def job_params(
    request: ChatCompletionRequest,
    defaults: Mapping[str, Any] | None = None,
    *,
    fixed: Mapping[str, Any] | None = None,
    max_tokens: int | None = None,
    max_n: int | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The generation parameters to call the LLM with, and the names that were dropped.

    A parameter the job left out (or sent as ``null``) takes the model's
    default from the operator's config, if there is one; ``fixed`` and the
    caps are applied after (see the module docstring).
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
            if name in TOKEN_LIMIT_PARAMS and any(n in params for n in TOKEN_LIMIT_PARAMS):
                # One limit, two names: a job's max_completion_tokens is its max_tokens.
                continue
            params.setdefault(name, value)
    if fixed:
        params.update(fixed)
    if max_tokens is not None:
        limited = [name for name in TOKEN_LIMIT_PARAMS if name in params]
        for name in limited:
            if _above(params[name], max_tokens):
                params[name] = max_tokens
        if not limited:
            params["max_tokens"] = max_tokens
    if max_n is not None and _above(params.get("n"), max_n):
        params["n"] = max_n
    return params, dropped


def _above(value: Any, cap: int) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > cap
