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

:func:`unreachable_reason` puts any failed connection (to a backend or to
the queue server) in a few words: aiohttp's own text shows its internals
(``Cannot connect to host h:p ssl:default [...]``, or the repr of an
``SSLContext``), which tell an operator nothing. :func:`failed_exchange`
makes the sentence of an aiohttp request that got no answer, worded by
whether a connection was made (:func:`never_connected`): "cannot connect
to X" points an operator at addresses, DNS and firewalls, which a
connection that was made and then broke has already passed.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
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
    return unreachable_reason(found)


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


def never_connected(exc: BaseException) -> bool:
    """Whether an aiohttp request failed before a connection to its server was made.

    aiohttp's connector failed (refused, DNS, connect timeout, TLS handshake,
    the proxy), or the URL could not be used. Anything else (a reset, the
    server closing the connection, an answer that broke off) came after the
    connection was made. Wording only: what pauses a backend is
    :func:`connection_failure`'s to decide.
    """
    return isinstance(
        exc,
        (
            aiohttp.ClientConnectorError,
            aiohttp.ConnectionTimeoutError,
            aiohttp.ClientHttpProxyError,
            aiohttp.InvalidURL,
        ),
    )


def failed_exchange(where: str, exc: BaseException) -> str:
    """One sentence on an aiohttp request to ``where`` that got no answer.

    "cannot connect to X: connection refused" only when no connection was
    made; otherwise "X closed the connection without answering", "the answer
    from X broke off" or "the connection to X broke: connection reset".
    """
    if never_connected(exc):
        return f"cannot connect to {where}: {unreachable_reason(exc)}"
    return _after_connecting(exc, where)


def broken_connection(exc: BaseException) -> str:
    """What became of a connection made and then lost, without naming its server.

    "closed the connection without answering", "the answer broke off", "the
    connection broke: connection reset".
    """
    return _after_connecting(exc, None)


def _after_connecting(exc: BaseException, where: str | None) -> str:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        closed = "closed the connection without answering"
        return f"{where} {closed}" if where else closed
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the answer from {where} broke off" if where else "the answer broke off"
    if isinstance(exc, aiohttp.ClientResponseError):  # not HTTP (a proxy's error is caught above)
        return f"{where or 'it'} answered with something that is not HTTP ({exc.message})"
    broke = f"the connection to {where} broke" if where else "the connection broke"
    return f"{broke}: {unreachable_reason(exc)}"


#: Connection errnos in the words an operator expects; others get ``os.strerror``.
_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ETIMEDOUT: "connection timed out",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
}
#: The errnos inside asyncio's "Multiple exceptions: [Errno 111] ..., [Errno 111] ...".
_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]")
#: TLS answered by a server speaking plain HTTP (OpenSSL's reason for it).
_PLAIN_HTTP_REASONS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"})


def unreachable_reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words: "connection refused", "host name not resolved"...

    Read from ``exc`` and its chain of causes, the first one that says.
    """
    for current in [exc, *_causes(exc)]:
        reason = _reason_of(current)
        if reason is not None:
            return reason
    return type(exc).__name__


def _reason_of(exc: BaseException) -> str | None:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _certificate_reason(exc.certificate_error)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _certificate_reason(exc)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return f"the proxy answered {exc.status}"
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"cannot reach the proxy ({_reason_of(exc.os_error) or 'no connection'})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _reason_of(exc.os_error) or "no connection"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or exc.strerror or type(exc).__name__
        if reason in _PLAIN_HTTP_REASONS:
            return f"TLS failure ({reason}: the server may speak plain HTTP; try http://)"
        return f"TLS failure ({reason})"
    if isinstance(exc, socket.gaierror):
        return "host name not resolved"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.SocketTimeoutError):  # connected; the answer did not come
        return "no answer in time"
    if isinstance(exc, (aiohttp.ConnectionTimeoutError, asyncio.TimeoutError, TimeoutError)):
        return "connection timed out"
    if isinstance(exc, aiohttp.InvalidURL):
        return "not a valid http(s) URL"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer broke off"
    if isinstance(exc, OSError):
        return _errno_reason(exc)
    return None


def _certificate_reason(exc: BaseException) -> str:
    detail = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
    return f"TLS certificate not accepted ({detail})" if detail else "TLS certificate not accepted"


def _errno_reason(exc: OSError) -> str:
    numbers = {exc.errno} if exc.errno else {int(n) for n in _ERRNO_IN_TEXT.findall(str(exc))}
    if len(numbers) == 1:
        number = numbers.pop()
        return _ERRNO_REASONS.get(number) or os.strerror(number).lower()
    if exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, ConnectionResetError):  # aiohttp's, writing to a closed connection
        return "connection reset"
    return type(exc).__name__
