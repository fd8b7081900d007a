"""Each whole response has a deadline: a server that trickles its answer cannot hold a request.

The servers here are raw sockets on loopback that read the request and then
answer the way an attacker would, one byte at a time. Their pauses are the
attacker's pacing; no assertion here is about time.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import httpcore
import pytest
import raw_server
from conftest import API_KEY
from openbeepboop import APITimeoutError, AsyncClient, Client
from openbeepboop._response_deadline import RESPONSE_BYTES_PER_SECOND, ResponseClock
from raw_server import Answer, RawServer, read_request

#: The client's read timeout in these tests: each trickled byte comes well within it.
READ_TIMEOUT = 1.0
#: The attacker's pause between bytes, and how many it sends before giving up:
#: without the bound a request would live 80 x 0.1 s, then end as a broken
#: connection rather than as a timeout.
TRICKLE_PAUSE = 0.1
TRICKLE_BYTES = 80


def trickle(conn: socket.socket, stop: threading.Event, data: bytes) -> None:
    for byte in data[:TRICKLE_BYTES]:
        if stop.wait(TRICKLE_PAUSE):
            return
        conn.sendall(bytes([byte]))


def trickled_head(conn: socket.socket, stop: threading.Event) -> None:
    trickle(conn, stop, b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 1000)


def trickled_body(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    conn.sendall(b"Content-Length: 1000\r\n\r\n")
    trickle(conn, stop, b"[" + b" " * 999)


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], RawServer]]:
    made: list[RawServer] = []

    def start(answer: Answer) -> RawServer:
        made.append(RawServer(answer))
        return made[-1]

    yield start
    for server in made:
        server.close()


@pytest.mark.parametrize("answer", [trickled_head, trickled_body], ids=["head", "body"])
def test_a_trickled_response_is_a_timeout_and_retried(
    serve: Callable[[Answer], RawServer], answer: Answer
) -> None:
    server = serve(answer)
    with (
        Client(base_url=server.url, api_key=API_KEY, timeout=READ_TIMEOUT, max_retries=1) as client,
        pytest.raises(APITimeoutError),
    ):
        client.models.list()
    assert server.connections == 2  # retried once, like any timeout


@pytest.mark.parametrize("answer", [trickled_head, trickled_body], ids=["head", "body"])
async def test_async_a_trickled_response_is_a_timeout(
    serve: Callable[[Answer], RawServer], answer: Answer
) -> None:
    server = serve(answer)
    async with AsyncClient(
        base_url=server.url, api_key=API_KEY, timeout=READ_TIMEOUT, max_retries=0
    ) as client:
        with pytest.raises(APITimeoutError):
            await client.models.list()


def steady_download(size: int) -> Answer:
    """A large body sent in steady 64 KiB steps, taking longer than the read timeout."""

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            + f"Content-Length: {size}\r\n\r\n".encode()
        )
        step = 64 * 1024
        for start in range(0, size, step):
            if stop.wait(0.05):
                return
            conn.sendall(b"x" * min(step, size - start))

    return answer


def test_a_large_download_at_a_steady_pace_finishes(
    serve: Callable[[Answer], RawServer],
) -> None:
    size = 2 * 1024 * 1024  # 32 steps of 50 ms: longer than READ_TIMEOUT in all
    server = serve(steady_download(size))
    with Client(base_url=server.url, api_key=API_KEY, timeout=READ_TIMEOUT, max_retries=0) as c:
        assert len(c.batches.content("file-1")) == size


def test_the_clock_starts_when_the_request_is_sent() -> None:
    now = [0.0]
    clock = ResponseClock(lambda: now[0])
    clock.sent()
    now[0] = 1000.0  # a long upload: not counted
    assert clock.read_timeout(60.0) == 60.0
    now[0] = 1059.0
    assert clock.read_timeout(60.0) == pytest.approx(1.0)
    now[0] = 1060.0
    with pytest.raises(httpcore.ReadTimeout):
        clock.read_timeout(60.0)


def test_bytes_received_buy_time_and_a_new_request_starts_afresh() -> None:
    now = [0.0]
    clock = ResponseClock(lambda: now[0])
    assert clock.read_timeout(10.0) == 10.0
    clock.received(b"x" * RESPONSE_BYTES_PER_SECOND * 5)  # five more seconds
    now[0] = 14.0
    assert clock.read_timeout(10.0) == pytest.approx(1.0)
    clock.sent()  # the next request on this connection
    assert clock.read_timeout(10.0) == 10.0
    assert clock.read_timeout(None) is None  # no read timeout asked: no bound either


def test_a_long_poll_gets_its_wait_on_top(serve: Callable[[Answer], RawServer]) -> None:
    """The long-poll's raised read timeout is the budget: an answer after 1.5 s is fine."""

    def late_answer(conn: socket.socket, stop: threading.Event) -> None:
        if stop.wait(1.5):
            return
        body = b'[{"id": "job-1", "object": "job", "status": "QUEUED", "completed": false}]'
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    server = serve(late_answer)
    with Client(base_url=server.url, api_key=API_KEY, timeout=READ_TIMEOUT, max_retries=0) as c:
        entries = c.jobs.poll(["job-1"], wait=1.0)
    assert entries[0].status == "QUEUED"


def endless_fast_body(conn: socket.socket, stop: threading.Event) -> None:
    """A chunked body that never ends, each chunk well within the pace allowed."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    conn.sendall(b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b" " * RESPONSE_BYTES_PER_SECOND
    while not stop.wait(0.05):
        conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))


def test_an_endless_body_fast_enough_still_ends_at_the_ceiling(
    serve: Callable[[Answer], RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("openbeepboop._response_deadline.MAX_RESPONSE_SECONDS", 2.0)
    server = serve(endless_fast_body)
    with (
        Client(base_url=server.url, api_key=API_KEY, timeout=READ_TIMEOUT, max_retries=0) as client,
        pytest.raises(APITimeoutError),
    ):
        client.models.list()


@pytest.mark.parametrize("answer", [trickled_head, trickled_body], ids=["head", "body"])
def test_a_proxy_from_the_environment_is_used_and_bounded(
    serve: Callable[[Answer], RawServer], answer: Answer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY is honoured (the request goes to it) and its answers have the deadline too."""
    seen: list[bytes] = []

    def proxy(conn: socket.socket, stop: threading.Event) -> None:
        answer(conn, stop)

    server = serve(proxy)
    original = read_request

    def recording(conn: socket.socket) -> None:
        peek = conn.recv(65536, socket.MSG_PEEK)
        seen.append(peek.split(b"\r\n", 1)[0])
        original(conn)

    monkeypatch.setattr(raw_server, "read_request", recording)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with (
        Client(
            base_url="http://queue.example.invalid:8000",
            api_key=API_KEY,
            timeout=READ_TIMEOUT,
            max_retries=0,
        ) as client,
        pytest.raises(APITimeoutError),
    ):
        client.models.list()
    # The proxy got the request with the server's absolute URL in it.
    assert seen and seen[0].startswith(b"GET http://queue.example.invalid:8000/")


def reset_mid_answer(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    conn.sendall(b"Content-Length: 1000\r\n\r\n[")
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def test_an_answer_cut_after_connecting_is_not_called_a_failure_to_connect(
    serve: Callable[[Answer], RawServer],
) -> None:
    from openbeepboop import APIConnectionError
    from openbeepboop.cli.errors import describe

    server = serve(reset_mid_answer)
    with (
        Client(base_url=server.url, api_key=API_KEY, timeout=READ_TIMEOUT, max_retries=0) as client,
        pytest.raises(APIConnectionError) as raised,
    ):
        client.models.list()
    line = describe(raised.value)
    assert "broke" in line and "could not connect" not in line, line
    assert "is the server running" not in line, line
