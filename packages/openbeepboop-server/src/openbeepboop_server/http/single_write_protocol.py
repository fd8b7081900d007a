"""uvicorn's HTTP protocol: one write per response, and connections that cannot hog the server.

uvicorn writes the status line and headers as soon as the app starts its
response, then the body as a second write. On loopback or a LAN each write is
its own TCP segment and its own wake-up of the reader, so a small JSON answer
(almost every answer this server gives) costs two sends and two reads. The
protocol here hands uvicorn a transport that holds a response head back until
the next write joins it; if nothing follows in the same turn of the event
loop (a streamed body, an empty one), the head goes out on the next turn on
its own. Nothing else about the transport changes.

Measured with the pickup scenario (idle long-polling node, submit -> leased),
on top of the hand-off: p50 5.44 -> 5.00 ms, p99 10.1 -> 8.4 ms
(docs/performance.md, one write per response).

The same subclass bounds what one connection may hold (``[server]``
settings, :class:`ConnectionLimits`; docs/server.md, "Connections"):

* a connection must send a complete request head within
  ``header_timeout_seconds`` of opening (or, on a kept-alive connection, of
  the first byte of its next request); uvicorn itself waits for ever;
* a request head (request line and headers) may hold at most
  ``max_header_bytes``; one that grows past it is answered ``431`` in the
  OpenAI error envelope and the connection closed, before more of it is
  parsed (uvicorn's parser keeps any head whole in memory, however long);
* a request's body must arrive whole within ``body_timeout_seconds`` of its head;
* an idle kept-alive connection closes after ``keep_alive_seconds``
  (uvicorn's own timer, given our setting);
* past ``max_connections`` open connections a new one is answered ``503`` in
  the OpenAI error envelope at once and closed, before anything is parsed,
  so a flood of idle sockets runs into that cap, not into the process's
  file-descriptor limit.

A connection cut for a timeout is simply closed (no response: a client that
cannot send a head in time would not read one either); an app already
running for it sees ``http.disconnect``. A long-poll is not affected: its
request is complete, and no timer runs while the app works on it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from openbeepboop_schemas import ErrorEnvelope
from uvicorn.protocols.http.auto import AutoHTTPProtocol

logger = logging.getLogger(__name__)

#: What a response head starts with; a body never does in practice, and if
#: one did it would only be held back for one loop turn.
_HEAD_PREFIX = b"HTTP/1.1 "
_HEAD_END = b"\r\n\r\n"


class HeadHoldingTransport:
    """A transport that joins a response head to the write that follows it.

    Everything but ``write``, ``close``, ``abort`` and the write-buffer size
    is the wrapped transport's own.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._flush_scheduled = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``; a response head waits for its body (at most one loop turn)."""
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + bytes(data))
            return
        if data[: len(_HEAD_PREFIX)] == _HEAD_PREFIX and data[-len(_HEAD_END) :] == _HEAD_END:
            self._held = bytes(data)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
            return
        self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        """Bytes not yet sent, the held head included."""
        held = len(self._held) if self._held is not None else 0
        return held + self._transport.get_write_buffer_size()

    def close(self) -> None:
        """Send what is held, then close."""
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        """Drop what is held and close at once."""
        self._held = None
        self._transport.abort()

    def _flush(self) -> None:
        self._flush_scheduled = False
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may take (the ``[server]`` settings of the same names)."""

    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 60.0
    keep_alive_seconds: float = 5.0
    max_connections: int = 4096
    max_header_bytes: int = 65536


def _answer(status: str, message: str, type_: str, code: str, *extra: str) -> bytes:
    """A whole ``connection: close`` answer in the OpenAI error envelope."""
    body = ErrorEnvelope.build(message=message, type=type_, code=code).model_dump_json()
    head = "".join(
        (
            f"HTTP/1.1 {status}\r\n",
            "content-type: application/json\r\n",
            *(f"{line}\r\n" for line in extra),
            "connection: close\r\n",
            f"content-length: {len(body)}\r\n\r\n",
        )
    )
    return (head + body).encode()


#: The whole answer to a connection past ``max_connections``, built once.
REFUSAL = _answer(
    "503 Service Unavailable",
    "the server has too many open connections; retry shortly",
    "service_unavailable",
    "too_many_connections",
    "retry-after: 1",
)


@functools.cache
def head_refusal(max_header_bytes: int) -> bytes:
    """The whole answer to a request head over ``max_header_bytes``."""
    return _answer(
        "431 Request Header Fields Too Large",
        f"the request line and headers exceed the server's limit of {max_header_bytes} "
        "bytes ([server] max_header_bytes)",
        "invalid_request_error",
        "request_headers_too_large",
    )


@functools.lru_cache(maxsize=8)
def malformed_request(message: str) -> bytes:
    """The whole answer to bytes uvicorn's parser cannot read (``message``: uvicorn's words)."""
    return _answer("400 Bad Request", message, "invalid_request_error", "invalid_http_request")


#: How long a refused connection is kept half-open for the client to read the answer.
REFUSAL_LINGER_SECONDS = 1.0


class OneSendHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """The HTTP protocol uvicorn would pick, on a :class:`HeadHoldingTransport`, with limits.

    uvicorn creates one per connection from the class alone: :meth:`configured`
    makes the subclass that carries a server's :class:`ConnectionLimits`.
    """

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    @classmethod
    def configured(cls, limits: ConnectionLimits) -> type[OneSendHTTPProtocol]:
        """A subclass whose connections follow ``limits``."""
        return type("ConfiguredHTTPProtocol", (cls,), {"limits": limits})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's keep-alive timer reads this (its config takes whole seconds only).
        self.timeout_keep_alive = self.limits.keep_alive_seconds
        self._deadline: asyncio.TimerHandle | None = None
        #: The request whose head was last seen complete.
        self._headed: Any = None
        self._refused = False
        #: Bytes received since the last request head was complete, while no
        #: body is expected: the head that is arriving (see :meth:`data_received`).
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(HeadHoldingTransport(transport))  # type: ignore[arg-type]
        if len(self.connections) > self.limits.max_connections:
            # Answer, half-close, and keep reading (into the void) until the
            # client closes or a moment passes: closing a socket with unread
            # input resets it, and the reset would destroy the answer too.
            self._refused = True
            self.transport.write(REFUSAL)
            self.transport.write_eof()
            self._arm(REFUSAL_LINGER_SECONDS, "refusal")
            return
        self._arm(self.limits.header_timeout_seconds, "request head")

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        cycle = self.cycle
        if cycle is None or not cycle.more_body:  # a request head is arriving
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._past_head_limit(data)
                return
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        cycle = self.cycle
        if self._deadline is None and cycle is not None and cycle.response_complete:
            # The first bytes of the next request on a kept-alive connection.
            self._arm(self.limits.header_timeout_seconds, "request head")
        super().data_received(data)
        cycle = self.cycle
        if cycle is None:
            return
        if cycle is not self._headed:
            self._headed = cycle
            self._head_bytes = 0
            self._disarm()
            if cycle.more_body:
                self._arm(self.limits.body_timeout_seconds, "request body")
        elif not cycle.more_body:
            self._disarm()

    def _past_head_limit(self, data: bytes) -> None:
        """``data`` takes the bytes of the arriving head past the limit.

        It may still hold a head that ends within the limit, followed by its
        body or the next request (one read can carry both): the parser gets
        the bytes up to the limit, and the rest only if a head ended there.
        Otherwise the head is too long: ``431``, and the connection closes.
        (Bytes that follow a complete request in the same read are not
        counted, so a head may overrun the limit by at most one read.)
        """
        allowed = self.limits.max_header_bytes - (self._head_bytes - len(data))
        before = self.cycle
        if allowed > 0:
            self._receive(data[:allowed])
        if self.transport.is_closing():
            return  # the parser refused the head itself
        if self.cycle is not before:
            self.data_received(data[allowed:])
            return
        logger.debug("refusing a request head over %d bytes", self.limits.max_header_bytes)
        self._refused = True
        if before is None or before.response_complete:
            self.transport.write(head_refusal(self.limits.max_header_bytes))
            self.transport.write_eof()
            self._arm(REFUSAL_LINGER_SECONDS, "refusal")
        else:  # a pipelined head behind an unfinished answer: no room for ours
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request its parser refuses, in the OpenAI error envelope.

        uvicorn answers ``text/plain`` (a bad request line, a negative
        ``Content-Length``, one with ``Transfer-Encoding`` as well); the API's
        contract is the envelope for every failure.
        """
        self.transport.write(malformed_request(msg))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._cut, seconds, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _cut(self, seconds: float, what: str) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            logger.debug("closing a connection whose %s took over %g s", what, seconds)
            self.transport.close()
