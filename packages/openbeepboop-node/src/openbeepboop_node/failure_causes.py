"""Why an LLM call failed, read from its chain of causes rather than its class.

LiteLLM wraps whatever went wrong in one of a few exception classes, and
the class alone does not say what the node needs to know: a refused
connection shows up as an ``APIConnectionError`` for Ollama and as a 500
``InternalServerError`` for OpenAI-compatible servers; an
``APIConnectionError`` may just as well mean LiteLLM refused to build the
request before any network. The underlying exceptions in the chain
(``__cause__`` / ``__context__``) do say: :func:`connection_failure` (no
connection was made: the backend is down, not the job's fault) and
:func:`local_failure` (raised before any network: the request's own fault).
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import aiohttp

#: httpx / httpcore exceptions (by module and name: neither is imported here,
#: and LiteLLM may use either) raised when no connection was made. Not
#: ReadTimeout, RemoteProtocolError, ...: there the backend was reached.
_CONNECT_FAILURES = frozenset(
    (module, name)
    for module in ("httpx", "httpcore")
    for name in ("ConnectError", "ConnectTimeout")
)
#: How deep an exception's chain of causes is searched.
_MAX_CHAIN = 32
#: Modules whose exceptions in a cause chain mean the network was involved.
_NETWORK_MODULES = frozenset({"httpx", "httpcore", "h11", "aiohttp", "anyio", "ssl", "socket"})


def connection_failure(exc: BaseException) -> str | None:
    """Why no connection to the backend was made, or None if one was (or it is unclear).

    LiteLLM reports a refused connection as an ``APIConnectionError`` for
    Ollama and as a 500 ``InternalServerError`` for OpenAI-compatible
    servers, and a connect timeout as a ``Timeout`` like any slow answer, so
    its class says nothing; the chain of causes does. Looked for in it:
    httpx's or httpcore's ``ConnectError``/``ConnectTimeout``, aiohttp's
    ``ClientConnectorError`` (refused, DNS: ``ClientConnectorDNSError``) and
    ``ConnectionTimeoutError``, ``ConnectionRefusedError`` and
    ``socket.gaierror``. A TLS failure anywhere in the chain rules it out:
    the backend answered, with a certificate or protocol this node refuses
    (httpx reports that as a ``ConnectError`` too).
    """
    found: BaseException | None = None
    for current in [exc, *_causes(exc)]:
        if isinstance(current, (ssl.SSLError, aiohttp.ClientSSLError)):
            return None
        kind = type(current)
        if found is None and (
            (kind.__module__.split(".")[0], kind.__name__) in _CONNECT_FAILURES
            or isinstance(
                current,
                (
                    aiohttp.ClientConnectorError,
                    aiohttp.ConnectionTimeoutError,
                    ConnectionRefusedError,
                    socket.gaierror,
                ),
            )
        ):
            found = current
    if found is None:
        return None
    return str(found) or type(found).__name__


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc``'s chain of causes and contexts (not ``exc`` itself), at most _MAX_CHAIN deep."""
    found: list[BaseException] = []
    seen = {id(exc)}
    pending = [link for link in (exc.__context__, exc.__cause__) if link is not None]
    while pending and len(found) < _MAX_CHAIN:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        pending.extend(link for link in (current.__context__, current.__cause__) if link)
    return found


def local_failure(exc: BaseException) -> bool:
    """Whether ``exc`` wraps a local exception and no network failure at all.

    LiteLLM reports as ``APIConnectionError`` both a connection that broke
    mid-answer and a request it refused to build before any network (an
    invalid message part, a parameter its provider transformation rejects):
    the first is worth another attempt, the second would fail the same way
    on every node. It is local when its chain holds exceptions and none of
    them is an httpx/httpcore/aiohttp/socket/ssl exception, an ``OSError``
    or a timeout. No chain at all says nothing: not local.
    """
    causes = _causes(exc)
    for cause in causes:
        kind = type(cause)
        if kind.__module__.split(".")[0] in _NETWORK_MODULES or isinstance(
            cause, (OSError, asyncio.TimeoutError, TimeoutError)
        ):
            return False
    return bool(causes)
