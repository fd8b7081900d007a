"""The one module that talks to LiteLLM: run a job's request, map its failures.

LiteLLM is imported here and nowhere else, lazily (importing it takes seconds
and reads the environment), after setting it up to stay offline: the bundled
model cost map instead of a download, no telemetry, no callbacks, no
"give feedback" banners on stdout. What the import leaves behind is frozen
out of the garbage collector's full collections. Neither the cost of a call
nor a logging payload for it is worked out after each call
(:mod:`~openbeepboop_node.litellm_bookkeeping`) unless LiteLLM's own logs
are on; where LiteLLM does price calls, a model it has no price for (most
self-hosted ones) is registered with zero prices on first use, see
:func:`price_unknown_model_as_free`.

A job's request reaches LiteLLM only through the allow-list in
:mod:`openbeepboop_node.request_params`; the operator's settings for the
model, resolved once into a :class:`~openbeepboop_node.model_routes.ModelRoute`
(``model``, ``api_base``, ``api_key``, ``timeout``), are applied last, and
LiteLLM's own retries are off because the queue retries. LiteLLM is told the
route's provider where that changes nothing it does
(:mod:`~openbeepboop_node.provider_hints`), so it does not work it out
again for every call.

Before a call the request is checked against the node's ceilings and its
media URLs against the model's policy (:mod:`~openbeepboop_node.request_guard`);
the whole call is bounded by the model's ``timeout``.

Failures become a wire :class:`~openbeepboop_schemas.NodeError`: retryable
for timeouts, connection errors, 408, 429 and 5xx; permanent for bad
requests (context window, content policy, a request LiteLLM refuses to
build: an ``APIConnectionError`` with no network failure behind it), auth
and unknown models. Its message is what the job's submitter sees: no
traceback, no node path, no key (:mod:`~openbeepboop_node.public_errors`). A call
that never got a connection to the backend (refused, DNS, connect timeout:
:func:`connection_failure`) is no failure of the job: it raises
:class:`~openbeepboop_node.exceptions.BackendUnreachableError` instead.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from openbeepboop_schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    NodeError,
)
from pydantic import ValidationError

from openbeepboop_node.exceptions import BackendUnreachableError, InferenceError
from openbeepboop_node.failure_causes import connection_failure, local_failure
from openbeepboop_node.litellm_bookkeeping import switch_off, unlogged
from openbeepboop_node.model_routes import ModelRoute
from openbeepboop_node.provider_hints import provider_hint
from openbeepboop_node.public_errors import public_message
from openbeepboop_node.request_guard import RequestLimits, check_media_urls, scan_request
from openbeepboop_node.request_params import job_params

if sys.version_info >= (3, 11):
    from asyncio import timeout
else:  # asyncio.timeout's backport: a dependency of aiohttp itself before 3.11
    from async_timeout import timeout  # type: ignore[import-not-found, unused-ignore]

logger = logging.getLogger(__name__)

#: Environment LiteLLM reads at import: use bundled data, fetch nothing on its own.
OFFLINE_ENVIRONMENT = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_OFFLINE_MODE": "true",
}

#: Loggers LiteLLM writes to (with a handler of its own).
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")

_import_lock = threading.Lock()
_litellm: Any = None
#: How much longer than the model's ``timeout`` a whole call may take: LiteLLM's
#: own timeout (connect or read) fires first where it applies and says which.
CALL_CEILING_MARGIN_SECONDS = 2.0
#: Deepest nesting of objects and arrays in a result the node delivers. The
#: server's JSON parser refuses documents nested more than 200 levels, and a
#: delivery wraps each result in three more; the node's own serialiser fails
#: a little past 250. Without this ceiling such an answer would be refused at
#: delivery (or crash it) instead of failing its one job.
MAX_RESULT_DEPTH = 128
#: LiteLLM model strings already checked against LiteLLM's price list.
_priced: set[str] = set()

#: (LiteLLM exception class name, wire error type, retryable), most specific first.
_EXCEPTION_TYPES: tuple[tuple[str, str, bool], ...] = (
    ("ContextWindowExceededError", "context_window_exceeded", False),
    ("ContentPolicyViolationError", "content_policy_violation", False),
    ("Timeout", "timeout", True),
    ("RateLimitError", "rate_limit_error", True),
    ("ServiceUnavailableError", "service_unavailable", True),
    ("BadGatewayError", "server_error", True),
    ("InternalServerError", "server_error", True),
    ("APIConnectionError", "api_connection_error", True),
    ("AuthenticationError", "authentication_error", False),
    ("PermissionDeniedError", "permission_error", False),
    ("NotFoundError", "not_found_error", False),
    ("UnprocessableEntityError", "invalid_request_error", False),
    ("BadRequestError", "invalid_request_error", False),
)

#: Wire error type by HTTP status, for exceptions only known by their status.
_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout",
    422: "invalid_request_error",
    429: "rate_limit_error",
}

#: Statuses worth another attempt besides 5xx.
_RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})


def load_litellm() -> Any:
    """Import and configure LiteLLM once (blocking: call it from a thread at start-up)."""
    global _litellm
    with _import_lock:
        if _litellm is None:
            for name, value in OFFLINE_ENVIRONMENT.items():
                os.environ.setdefault(name, value)
            # Imported by name: LiteLLM is untyped for our purposes and huge to analyse.
            litellm: Any = importlib.import_module("litellm")

            litellm.telemetry = False  # older releases phoned home unless told not to
            litellm.suppress_debug_info = True
            # With it on, LiteLLM deep-copies every call's logging payload to
            # blank the messages out of it, ~0.2 ms of CPU per call; only its
            # own debug logs could show that payload here (no callbacks), so
            # the copy is made only when the operator turned those on.
            litellm.turn_off_message_logging = bool(os.environ.get("LITELLM_LOG"))
            litellm.success_callback = []
            litellm.failure_callback = []
            litellm.callbacks = []
            if not os.environ.get("LITELLM_LOG"):
                # Its loggers print per-call chatter to stdout; the operator can
                # still ask for it with LITELLM_LOG=DEBUG.
                for name in LITELLM_LOGGERS:
                    logging.getLogger(name).setLevel(logging.WARNING)
                # No cost, no logging payload: nobody reads them here.
                switch_off(litellm)
            _freeze_import_objects()
            _litellm = litellm
        return _litellm


def _freeze_import_objects() -> None:
    """Keep the cyclic garbage collector off everything imported so far.

    LiteLLM's import leaves ~415,000 objects that live as long as the
    process. Every full collection walked all of them: 250-330 ms with the
    event loop stopped, every ~2,000 jobs, ~0.2 ms per job on average.
    Frozen, a node's collections cost ~0.12 ms per job with no long pauses
    (docs/performance.md, "LiteLLM's import frozen out of the GC"). Garbage
    is collected first, so nothing collectable is frozen.
    """
    gc.collect()
    gc.freeze()


def price_unknown_model_as_free(litellm_model: str) -> None:
    """Give LiteLLM zero prices for ``litellm_model`` if its price list lacks it.

    Where LiteLLM still works out what each call cost (its own logs on, or a
    LiteLLM whose cost calculation :mod:`~openbeepboop_node.litellm_bookkeeping`
    could not switch off), a model its bundled price list does not know (an
    Ollama tag, a vLLM or llama.cpp deployment name) is first searched for
    through every fallback rule, which costs more CPU than the rest of the
    call's bookkeeping (about 3 ms a call on the bench machine;
    docs/performance.md, "Unpriced models registered as free") and finds
    nothing. OpenBeepBoop reports no cost, so a free entry changes nothing a
    user sees; models LiteLLM does price are left alone. Checked once per
    model string.
    """
    if litellm_model in _priced:
        return
    litellm = load_litellm()
    _priced.add(litellm_model)
    if _priced_by_litellm(litellm, litellm_model):
        return
    try:
        _, provider, _, _ = litellm.get_llm_provider(litellm_model)
    except Exception:  # a model string LiteLLM cannot route: the call will say so
        return
    entry = {
        "input_cost_per_token": 0.0,
        "output_cost_per_token": 0.0,
        "litellm_provider": provider,
        "mode": "chat",
    }
    # LiteLLM warns that such an entry has no cache prices: true, and no news.
    litellm_logger = logging.getLogger(LITELLM_LOGGERS[0])
    level = litellm_logger.level
    litellm_logger.setLevel(logging.ERROR)
    try:
        litellm.register_model({litellm_model: entry})
    finally:
        litellm_logger.setLevel(level)
    logger.debug("%s: not in LiteLLM's price list, registered as free", litellm_model)


def _priced_by_litellm(litellm: Any, litellm_model: str) -> bool:
    try:
        litellm.get_model_info(model=litellm_model)
    except Exception:  # LiteLLM's way of saying it has no price for this model
        return False
    return True


def is_retryable_status(status: int) -> bool:
    """Whether a provider's HTTP status is worth another attempt."""
    return status in _RETRYABLE_STATUSES or status >= 500


def to_node_error(
    exc: BaseException, secrets: tuple[str, ...] = (), endpoints: tuple[str, ...] = ()
) -> NodeError:
    """What the queue should record for a failed LLM call.

    The message is the one the job's submitter sees: no traceback, no node
    file path, ``secrets`` and ``endpoints`` masked
    (:func:`~openbeepboop_node.public_errors.public_message`).
    """
    litellm = load_litellm()
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) and 100 <= status <= 599 else None
    raw = str(getattr(exc, "message", None) or exc)
    message = public_message(raw, secrets=secrets, endpoints=endpoints, fallback=type(exc).__name__)
    for class_name, error_type, retryable in _EXCEPTION_TYPES:
        cls = getattr(litellm, class_name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            if class_name == "APIConnectionError":
                status = None  # no HTTP answer came back; LiteLLM says 500
                if local_failure(exc):
                    # Raised while LiteLLM built the request: the request's own fault.
                    error_type, retryable = "invalid_request_error", False
            return NodeError(
                message=message, type=error_type, retryable=retryable, status_code=status
            )
    if status is not None:
        return NodeError(
            message=message,
            type=_STATUS_TYPES.get(status, "server_error" if status >= 500 else "api_error"),
            retryable=is_retryable_status(status),
            status_code=status,
        )
    # Not a provider answer at all (a LiteLLM bug, a local failure): let the
    # queue try again, bounded by the job's max_attempts.
    return NodeError(
        message=public_message(
            f"{type(exc).__name__}: {raw}", secrets=secrets, endpoints=endpoints
        ),
        type="node_error",
        retryable=True,
    )


class Inference:
    """Runs jobs' chat completions on the routes their models resolved to.

    ``limits`` are the node's ceilings on one request
    (:mod:`~openbeepboop_node.request_guard`), checked before every call.
    """

    def __init__(self, limits: RequestLimits | None = None) -> None:
        self.limits = limits or RequestLimits()

    def load(self) -> None:
        """Import LiteLLM now rather than on the first job."""
        load_litellm()

    def call_kwargs(
        self, route: ModelRoute, request: ChatCompletionRequest, job_id: str | None = None
    ) -> dict[str, Any]:
        """The keyword arguments for ``litellm.acompletion``: job parameters, then ours."""
        params, dropped = job_params(
            request,
            route.defaults,
            fixed=route.fixed,
            max_tokens=route.max_tokens,
            max_n=route.max_n,
            extra=route.extra_params,
        )
        if dropped:
            logger.debug("job %s: not forwarding %s", job_id or "-", ", ".join(sorted(dropped)))
        params["model"] = route.litellm_model
        params["timeout"] = route.timeout
        params["stream"] = False
        params["num_retries"] = 0  # the queue retries, with backoff and an attempt count
        params["max_retries"] = 0
        if route.api_base is not None:
            params["api_base"] = route.api_base
        if route.api_key is not None:
            params["api_key"] = route.api_key
        return params

    async def complete(
        self,
        route: ModelRoute,
        request: ChatCompletionRequest,
        job_id: str | None = None,
        *,
        on_sent: Callable[[], None] | None = None,
    ) -> ChatCompletion:
        """Run one request; InferenceError carries the error to report.

        The request is checked first (size ceilings, media URLs: permanent
        errors, no call made). The whole call, LiteLLM's own work included,
        is bounded by the model's ``timeout``: LiteLLM applies it to the
        HTTP exchange, not to what it does before and after.
        BackendUnreachableError when no connection to the backend was made.
        ``on_sent`` is called on the event loop once LiteLLM has built the
        request and is handing it to the backend (see :func:`once_on_loop`);
        not at all if the call ends before that.
        """
        urls = scan_request(request, self.limits)
        if urls:
            await check_media_urls(urls, route.allow_media_urls)
        litellm = _litellm or await asyncio.to_thread(load_litellm)
        kwargs = self.call_kwargs(route, request, job_id)
        if on_sent is not None:
            kwargs["logger_fn"] = once_on_loop(on_sent, asyncio.get_running_loop())
        price_unknown_model_as_free(kwargs["model"])
        provider = provider_hint(litellm, route.litellm_model, route.api_base, route.api_key)
        if provider is not None:
            kwargs["custom_llm_provider"] = provider
        try:
            # A deadline on this task rather than asyncio.wait_for's task around
            # the call: one task fewer to start and wake for every job.
            with unlogged():
                async with timeout(route.timeout + CALL_CEILING_MARGIN_SECONDS):
                    response = await litellm.acompletion(**kwargs)
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError as exc:
            raise InferenceError(
                NodeError(
                    message=f"the LLM call took longer than the model's timeout of "
                    f"{route.timeout:g} s (and {CALL_CEILING_MARGIN_SECONDS:g} s of margin)",
                    type="timeout",
                    retryable=True,
                )
            ) from exc
        except Exception as exc:
            unreachable = connection_failure(exc)
            if unreachable is not None:
                where = route.api_base or route.litellm_model
                raise BackendUnreachableError(f"cannot connect to {where}: {unreachable}") from exc
            logger.debug("job %s: the LLM call failed", job_id or "-", exc_info=True)
            secrets = (route.api_key,) if route.api_key else ()
            endpoints = (route.api_base,) if route.api_base else ()
            raise InferenceError(to_node_error(exc, secrets, endpoints)) from exc
        try:
            answer = response.model_dump()
            if _nested_deeper_than(answer, MAX_RESULT_DEPTH):
                raise ValueError(f"it is nested more than {MAX_RESULT_DEPTH} levels deep")
            return ChatCompletion.model_validate(answer)
        except (ValidationError, ValueError, AttributeError, TypeError) as exc:
            logger.debug("job %s: not a chat.completion", job_id or "-", exc_info=True)
            raise InferenceError(
                NodeError(
                    message=public_message(f"the LLM's answer is not a chat.completion: {exc}"),
                    type="invalid_response",
                    retryable=False,
                )
            ) from exc


def once_on_loop(
    callback: Callable[[], None], loop: asyncio.AbstractEventLoop
) -> Callable[[Any], None]:
    """A LiteLLM ``logger_fn`` that schedules ``callback`` on ``loop`` the first time it is called.

    LiteLLM calls its ``logger_fn`` (a documented parameter of ``completion``)
    with the call's details just before it sends the request to the
    provider, and again once the answer is in; only the first call is
    passed on. It is scheduled rather than run: LiteLLM may call from a
    worker thread, and on the loop the request is then out by the time the
    callback runs (nothing awaits between the call and the send).
    """
    called = False

    def logger_fn(_details: Any) -> None:
        nonlocal called
        if called:
            return
        called = True
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.call_soon(callback)
        else:
            loop.call_soon_threadsafe(callback)

    return logger_fn


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """True if ``value`` nests dicts and lists more than ``limit`` levels deep."""
    if not isinstance(value, (dict, list)):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        for child in current.values() if isinstance(current, dict) else current:
            if isinstance(child, (dict, list)):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False
