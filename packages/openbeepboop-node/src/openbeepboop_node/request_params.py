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

A self-hosted server has knobs of its own beyond OpenAI's (vLLM's ``top_k``,
``min_p``, ``repetition_penalty``, ``chat_template_kwargs``). The operator
may name such fields per model (``extra_params``): a job's values for them
go to the server inside LiteLLM's ``extra_body``, which LiteLLM puts in the
request body as they are and never reads itself, so they cannot redirect
the call or reach a key. A name LiteLLM or the request already uses
(:func:`extra_param_problem`) cannot be one of them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
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

#: Fields of the request itself, never a job's extra: the node sets or refuses them.
RESERVED_FIELDS: frozenset[str] = frozenset({"model", "stream", "stream_options", "extra_body"})
#: Most ``extra_params`` one model may name.
MAX_EXTRA_PARAMS = 64
#: Longest name in ``extra_params``.
MAX_EXTRA_PARAM_CHARS = 64

#: Parameters an operator may give per-model defaults for (``messages`` is the job's own).
DEFAULTABLE_PARAMS: frozenset[str] = FORWARDED_PARAMS - {"messages"}


#: The parameters a ``max_tokens`` cap bounds.
TOKEN_LIMIT_PARAMS = ("max_tokens", "max_completion_tokens")


def extra_param_problem(name: str) -> str | None:
    """Why ``name`` cannot be an ``extra_params`` entry, or None.

    Forwarded parameters already go (and the operator's ``defaults``, ``fixed``
    and caps bound them); the request's own fields are the node's to set.
    """
    if not name or len(name) > MAX_EXTRA_PARAM_CHARS or not name.isascii():
        return f"a field name of 1-{MAX_EXTRA_PARAM_CHARS} ASCII characters is expected"
    if name in FORWARDED_PARAMS:
        return "an OpenAI parameter the node forwards anyway"
    if name in RESERVED_FIELDS:
        return "a field the node sets itself"
    return None


def job_params(
    request: ChatCompletionRequest,
    defaults: Mapping[str, Any] | None = None,
    *,
    fixed: Mapping[str, Any] | None = None,
    max_tokens: int | None = None,
    max_n: int | None = None,
    extra: Collection[str] = (),
) -> tuple[dict[str, Any], list[str]]:
    """The generation parameters to call the LLM with, and the names that were dropped.

    A parameter the job left out (or sent as ``null``) takes the model's
    default from the operator's config, if there is one; ``fixed`` and the
    caps are applied after (see the module docstring). The job's fields
    named in ``extra`` (the model's ``extra_params``, which the config has
    checked with :func:`extra_param_problem`) go in ``extra_body``.
    """
    params: dict[str, Any] = {}
    dropped: list[str] = []
    extra_body: dict[str, Any] = {}
    for name, value in request.to_payload().items():
        if name not in FORWARDED_PARAMS:
            if name in extra:
                if value is not None:
                    extra_body[name] = value
            elif name not in ("model", "stream"):
                dropped.append(name)
        elif value is not None:
            params[name] = value
    if extra_body:
        params["extra_body"] = extra_body
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
