"""What the node says when it cannot reach its queue server or a backend: a URL and a reason.

aiohttp's own text (``Cannot connect to host 127.0.0.1:9 ssl:default [...]``,
or an ``SSLContext``'s repr) names its internals; an operator gets "connection
refused", "host name not resolved", "TLS failure ..." instead.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from fake_queue import LoopbackServer, Received, Reply, always
from openbeepboop_node.exceptions import (
    NotAQueueServerError,
    ServerRequestError,
    ServerUnavailableError,
)
from openbeepboop_node.failure_causes import unreachable_reason
from openbeepboop_node.queue_client import QueueClient

KEY = "sk-" + "u" * 40
KEY_OF_CONNECTION = ConnectionKey("gpu.example", 8000, False, True, None, None, None)


def connector_error(os_error: OSError) -> aiohttp.ClientConnectorError:
    return aiohttp.ClientConnectorError(KEY_OF_CONNECTION, os_error)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (connector_error(ConnectionRefusedError(111, "Connect call failed")), "connection refused"),
        (
            connector_error(socket.gaierror(-2, "Name or service not known")),
            "host name not resolved",
        ),
        (
            connector_error(
                OSError(
                    "Multiple exceptions: [Errno 111] Connect call failed ('::1', 11434, 0, 0), "
                    "[Errno 111] Connect call failed ('127.0.0.1', 11434)"
                )
            ),
            "connection refused",
        ),
        (connector_error(OSError(113, "No route to host")), "no route to host"),
        (aiohttp.ServerDisconnectedError(), "the server closed the connection without answering"),
        (aiohttp.ConnectionTimeoutError(), "connection timed out"),
        (aiohttp.SocketTimeoutError(), "no answer in time"),
    ],
)
def test_each_failure_reads_as_a_reason(error: BaseException, reason: str) -> None:
    assert unreachable_reason(error) == reason


def test_a_certificate_failure_says_so() -> None:
    refused = ssl.SSLCertVerificationError(1, "certificate verify failed")
    refused.verify_message = "self-signed certificate"
    error = aiohttp.ClientConnectorCertificateError(KEY_OF_CONNECTION, refused)
    assert unreachable_reason(error) == "TLS certificate not accepted (self-signed certificate)"


async def fetch_failure(client: QueueClient, expected: type[Exception]) -> Exception:
    """What one fetch through ``client`` raised (``expected`` or a subclass); closes it."""
    try:
        with pytest.raises(expected) as caught:
            await client.fetch(["m"], 1, 0)
    finally:
        await client.aclose()
    return caught.value


@pytest.fixture
def plain_http() -> Iterator[LoopbackServer]:
    with LoopbackServer(always(Reply(200, []))) as server:
        yield server


async def test_https_to_a_plain_http_server_is_a_tls_failure_not_aiohttp_internals(
    plain_http: LoopbackServer,
) -> None:
    url = plain_http.url.replace("http://", "https://")
    message = str(await fetch_failure(QueueClient(url, KEY, "node-1"), ServerUnavailableError))
    assert message.startswith(f"cannot connect to {url}: TLS failure (")
    assert "ssl:" not in message and "SSLContext" not in message and "\n" not in message


async def test_a_refused_connection_names_the_url_and_the_reason() -> None:
    with LoopbackServer(always(Reply(200, []))) as gone:
        url = gone.url
    failure = await fetch_failure(QueueClient(url, KEY, "node-1"), ServerUnavailableError)
    assert str(failure) == f"cannot connect to {url}: connection refused"


async def test_a_server_that_does_not_answer_in_time_is_named_with_the_reason(
    plain_http: LoopbackServer,
) -> None:
    let_go = threading.Event()

    def stall(request: Received) -> Reply:
        let_go.wait(30)
        return Reply(200, [])

    plain_http.respond = stall
    client = QueueClient(plain_http.url, KEY, "node-1", fetch_wait=0, read_margin=0.2)
    try:
        with pytest.raises(ServerUnavailableError) as caught:
            await client.fetch(["m"], 1, 0)
    finally:
        let_go.set()
        await client.aclose()
    assert str(caught.value) == f"timed out talking to {plain_http.url} (no answer in time)"


@pytest.mark.parametrize(
    "reply",
    [
        Reply(404, text="404 page not found"),  # an LLM backend, another web server
        Reply(404, text="<html><body><h1>Not Found</h1></body></html>"),
        Reply(501, text="<!DOCTYPE HTML>\n<html>\n<p>Unsupported method</p>\n</html>\n"),
    ],
)
async def test_a_404_without_the_envelope_says_server_url_is_no_queue_server(
    plain_http: LoopbackServer, reply: Reply
) -> None:
    plain_http.respond = always(reply)
    client = QueueClient(plain_http.url, KEY, "node-1")
    message = str(await fetch_failure(client, NotAQueueServerError))
    assert message.startswith(
        f"server_url {plain_http.url} is not an OpenBeepBoop queue server: "
        f"/internal/queue/fetch answered {reply.status}"
    )
    assert "\n" not in message and "<" not in message


async def test_a_404_in_the_envelope_is_the_server_refusing_the_request(
    plain_http: LoopbackServer,
) -> None:
    envelope = {"error": {"message": "no such thing", "type": "not_found_error"}}
    plain_http.respond = always(Reply(404, envelope))
    failure = await fetch_failure(QueueClient(plain_http.url, KEY, "node-1"), ServerRequestError)
    assert "no such thing" in str(failure)
    assert not isinstance(failure, NotAQueueServerError)
