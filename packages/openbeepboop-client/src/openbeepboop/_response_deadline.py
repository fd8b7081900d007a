"""A bound on each whole response, where httpx bounds only each read.

httpx's timeouts are per operation: every byte that arrives resets the read
timeout, so a server that trickles its answer one byte every few seconds
would hold a request for ever. The connections the client opens are
therefore wrapped (:func:`bound_responses`) so that once the request is
sent, the whole response, head and body, must arrive within the request's
read timeout (which a long-poll already raises to its server-side ``wait`` +
``LONG_POLL_GRACE``), plus one second for every
:data:`RESPONSE_BYTES_PER_SECOND` bytes received, so a large download that
is slow but steady still finishes; and never later than
:data:`MAX_RESPONSE_SECONDS`, so an endless body cannot hold it either.

The clock starts at the first read after the request is written: an upload,
however large and slow, is bounded only by its per-write timeout, so a
200 MB file going out over a thin line finishes. A response cut by the bound
raises ``httpcore.ReadTimeout``, which httpx turns into ``httpx.ReadTimeout``
and the client into ``APITimeoutError``, retried like any other timeout.

Only httpx's own network layer can see each read, so the wrap reaches
private attributes of httpx (the client's ``_transport`` and ``_mounts``,
the transports' ``_pool``) and one of httpcore (``_network_backend``); if a
later release renames them the client runs without the bound (a debug log
says so) rather than failing, and the tests of this bound fail loudly.
"""

from __future__ import annotations

import logging
import ssl
import time
import typing
from collections.abc import Callable, Iterable

import httpcore
import httpx

logger = logging.getLogger(__name__)

#: Each byte of a response buys 1/this seconds past its read timeout: a 200 MB
#: download may take as long as it would at 16 KiB/s (128 kbit/s, slower than
#: any real link), while a trickle of a byte every few seconds buys nothing.
RESPONSE_BYTES_PER_SECOND = 16 * 1024
#: However fast it moves, no response may take longer than this: a hostile
#: server streaming an endless body at 16 KiB/s or more would otherwise hold
#: a call (and grow its memory) for ever. An hour carries a 200 MB batch
#: output file at 57 KiB/s; a larger or slower download is cut and retried.
MAX_RESPONSE_SECONDS = 3600.0

_SocketOptions = Iterable[typing.Any] | None


class ResponseClock:
    """The deadline of the response being read on one connection."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started: float | None = None
        self._received = 0

    def sent(self) -> None:
        """A request was written: the next read starts the next response's clock."""
        self._started = None

    def read_timeout(self, timeout: float | None) -> float | None:
        """The timeout of the next read: ``timeout``, cut to what the response has left.

        Raises ``httpcore.ReadTimeout`` when nothing is left. Without a read
        timeout (``None``) there is no bound either: the caller asked for none.
        """
        if timeout is None:
            return None
        now = self._clock()
        if self._started is None:
            self._started, self._received = now, 0
        allowed = min(
            timeout + self._received / RESPONSE_BYTES_PER_SECOND,
            max(timeout, MAX_RESPONSE_SECONDS),
        )
        left = self._started + allowed - now
        if left <= 0:
            raise httpcore.ReadTimeout(
                f"the response did not arrive whole within {allowed:.0f}s "
                f"({self._received} bytes received)"
            )
        return min(timeout, left)

    def received(self, data: bytes) -> None:
        """Count the bytes that arrived: each buys a little more time."""
        self._received += len(data)


class _BoundedStream(httpcore.NetworkStream):
    """A connection whose responses each have a deadline (see the module docstring)."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream
        self._clock = ResponseClock()

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._stream.read(max_bytes, self._clock.read_timeout(timeout))
        self._clock.received(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._clock.sent()
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _BoundedStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _BoundedBackend(httpcore.NetworkBackend):
    """Opens connections through ``backend`` and bounds their responses."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: _SocketOptions = None,
    ) -> httpcore.NetworkStream:
        return _BoundedStream(
            self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: _SocketOptions = None
    ) -> httpcore.NetworkStream:
        return _BoundedStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _AsyncBoundedStream(httpcore.AsyncNetworkStream):
    """The async twin of :class:`_BoundedStream`."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._clock = ResponseClock()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = await self._stream.read(max_bytes, self._clock.read_timeout(timeout))
        self._clock.received(data)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._clock.sent()
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        return _AsyncBoundedStream(stream)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _AsyncBoundedBackend(httpcore.AsyncNetworkBackend):
    """The async twin of :class:`_BoundedBackend`."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: _SocketOptions = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _AsyncBoundedStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: _SocketOptions = None
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_unix_socket(path, timeout, socket_options)
        return _AsyncBoundedStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def bound_responses(http: httpx.Client | httpx.AsyncClient) -> None:
    """Put a deadline on each whole response of every connection ``http`` opens.

    Called on a client httpx has just built, so that what httpx set up from
    the environment (a proxy from ``HTTP_PROXY``/``HTTPS_PROXY``, ``NO_PROXY``)
    stays exactly as httpx made it: only the network layer under each of its
    transports is wrapped. Passing ``transport=`` instead would switch
    httpx's environment proxies off.
    """
    mounted = getattr(http, "_mounts", {})
    for transport in (getattr(http, "_transport", None), *mounted.values()):
        if transport is not None:
            _bound_transport(transport)


def _bound_transport(transport: object) -> None:
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, (_BoundedBackend, _AsyncBoundedBackend)):
        return
    if isinstance(backend, httpcore.NetworkBackend):
        pool._network_backend = _BoundedBackend(backend)  # type: ignore[union-attr]
    elif isinstance(backend, httpcore.AsyncNetworkBackend):
        pool._network_backend = _AsyncBoundedBackend(backend)  # type: ignore[union-attr]
    else:  # pragma: no cover - an httpx or httpcore release that moved them
        logger.debug("cannot bound whole responses with this httpx; per-read timeouts only")
