"""Telling LiteLLM which provider a call is for, so that it does not work it out three times a call.

LiteLLM finds the provider of a model string (``openai`` for
``openai/llama3``, ``ollama_chat`` for ``ollama_chat/llama3``) with
``get_llm_provider``. Without a ``custom_llm_provider`` argument, a call
does so three times: its setup (for the logging object), ``acompletion``
(after validating the call's arguments into LiteLLM's own parameter model)
and ``completion``. Given the provider, the first two are skipped: 3 % of the
instructions of a whole call against the stand-in (docs/performance.md,
"The provider told to LiteLLM").

The hint is only given where it cannot change what LiteLLM does: the model
string starts with the provider's own name (``openai/...``), and LiteLLM
resolves it to exactly the same model, provider, key and endpoint with the
hint as without it, and to the same provider without the endpoint (as its
call setup looks it up). Anything else (a model string LiteLLM reads
differently with the hint, such as ``cohere/command-r`` served by
``cohere_chat``, one it cannot route, a LiteLLM whose
``get_llm_provider`` moved) gets no hint, and LiteLLM works it out as before.
Checked once per model string, endpoint and key.
"""

from __future__ import annotations

import logging
from types import ModuleType

logger = logging.getLogger(__name__)

#: How many (model, endpoint, key) answers are kept: a ``*`` route names a
#: model per job; past this, calls go without a hint rather than grow the table.
MAX_PROVIDER_HINTS = 4096

_hints: dict[tuple[str, str | None, str | None], str | None] = {}


def provider_hint(
    litellm: ModuleType, model: str, api_base: str | None, api_key: str | None
) -> str | None:
    """The ``custom_llm_provider`` to call ``model`` with, or None to let LiteLLM find it."""
    key = (model, api_base, api_key)
    try:
        return _hints[key]
    except KeyError:
        pass
    if len(_hints) >= MAX_PROVIDER_HINTS:
        return None
    hint = _resolve(litellm, model, api_base, api_key)
    _hints[key] = hint
    logger.debug("%s: provider hint %s", model, hint or "none")
    return hint


def _resolve(
    litellm: ModuleType, model: str, api_base: str | None, api_key: str | None
) -> str | None:
    prefix, slash, _ = model.partition("/")
    if not slash:
        return None
    try:
        found = litellm.get_llm_provider(model, api_base=api_base, api_key=api_key)
        if found[1] != prefix:
            return None
        hinted = litellm.get_llm_provider(
            model, custom_llm_provider=prefix, api_base=api_base, api_key=api_key
        )
        bare = litellm.get_llm_provider(model)
    except Exception:  # a model string LiteLLM cannot route: the call will say so
        return None
    if tuple(hinted) != tuple(found) or bare[1] != prefix:
        return None
    return prefix
