"""Switching off the bookkeeping LiteLLM does after every call, which the node never reads.

After each call LiteLLM prices it (its price list, then a diagnostic for a
price of zero) on the way back to the caller, then builds a logging payload
for its success callbacks on a task of its own, pricing the call again for
it. The node registers no callbacks and OpenBeepBoop reports no cost, yet
that work was a quarter of the instructions of a whole call
(docs/performance.md, "No cost or success logging in LiteLLM").

LiteLLM has no public switch for either, so this module reaches into it at
two points, and nowhere else:

- ``litellm.response_cost_calculator``, the function LiteLLM's logging object
  calls to price a response, is replaced by one that prices nothing:
  ``None``, "no cost known", which LiteLLM already handles (it then also
  skips its zero-cost diagnostic);
- each call runs with ``litellm._internal_context.is_internal_call`` set,
  LiteLLM's own flag for a call whose logging and billing another call
  does, so no success or failure logging is scheduled for it.

Either is left alone when LiteLLM has moved it (the call then costs what it
did before, nothing breaks), and both when the operator turned on LiteLLM's
own logs with ``LITELLM_LOG``: whoever debugs LiteLLM gets LiteLLM as it is.
``tests/test_litellm_bookkeeping.py`` fails when an upgrade moves either.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from types import ModuleType

logger = logging.getLogger(__name__)

#: The function LiteLLM's logging object prices a response with.
COST_CALCULATOR = "response_cost_calculator"
#: Where LiteLLM keeps its flag for calls that must not be logged or billed.
INTERNAL_CONTEXT_MODULE = "litellm._internal_context"
INTERNAL_CALL_FLAG = "is_internal_call"

#: LiteLLM's flag once :func:`switch_off` found it; None: calls run unflagged.
_flag: ContextVar[bool] | None = None


def _no_cost(*args: object, **kwargs: object) -> None:
    """Stands in for ``litellm.response_cost_calculator``: no cost known."""
    return None


def switch_off(litellm: ModuleType) -> list[str]:
    """Switch off LiteLLM's cost calculation and call logging; returns what was.

    Called once, right after LiteLLM's import. What LiteLLM no longer has
    where this module expects it is left as it is.
    """
    global _flag
    done: list[str] = []
    if callable(getattr(litellm, COST_CALCULATOR, None)):
        setattr(litellm, COST_CALCULATOR, _no_cost)
        done.append("cost calculation")
    _flag = _internal_call_flag()
    if _flag is not None:
        done.append("call logging")
    logger.debug("LiteLLM bookkeeping switched off: %s", ", ".join(done) or "nothing found")
    return done


def _internal_call_flag() -> ContextVar[bool] | None:
    try:
        module = importlib.import_module(INTERNAL_CONTEXT_MODULE)
    except ImportError:
        return None
    flag = getattr(module, INTERNAL_CALL_FLAG, None)
    return flag if isinstance(flag, ContextVar) else None


@contextlib.contextmanager
def unlogged() -> Iterator[None]:
    """Run a LiteLLM call inside this to keep LiteLLM from logging it (once switched off).

    The flag is a context variable: it holds for the task that enters this
    and for the tasks it creates meanwhile.
    """
    if _flag is None:
        yield
        return
    token = _flag.set(True)
    try:
        yield
    finally:
        _flag.reset(token)
