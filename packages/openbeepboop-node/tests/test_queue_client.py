"""The HTTP side of the node protocol, against a loopback server that scripts each answer."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fake_queue import DROP, LoopbackServer, Received, Reply, always
from openbeepboop_node.exceptions import (
    KeyRejectedError,
    ServerRequestError,
    ServerUnavailableError,
)
from openbeepboop_node.fetch_answer import INVALID_LEASE
from openbeepboop_node.queue_client import (
    OFF_LOOP_PARSE_BYTES,
    READ_TIMEOUT_MARGIN_SECONDS,
    QueueClient,
    proxy_for,
)
from openbeepboop_schemas import ErrorOutcome, LeaseRef, ReleaseOutcome

KEY = "sk-" + "q" * 40
FETCH = "/internal/queue/fetch"

LEASE = {
    "job_id": "job-1",
    "lease_token": "tok",
    "lease_expires_at": 1e10,
    "lease_seconds": 300,
    "attempt": 1,
    "model": "llama3",
    "request": {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "seed": 1},
    "future_field": "tolerated",
}


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(lambda request: Reply(500, text="unscripted")) as loopback:
        yield loopback


@pytest.fixture
async def client(server: LoopbackServer) -> AsyncIterator[QueueClient]:
    queue = QueueClient(server.url, KEY, "node-1", version="9.9", fetch_wait=25)
    yield queue
    await queue.aclose()


async def test_fetch_sends_models_slots_and_key(
    server: LoopbackServer, client: QueueClient
) -> None:
    server.respond = always(Reply(200, [LEASE]))
    (lease,) = await client.fetch(["llama3", "*"], max_jobs=3, wait=25)
    assert lease.job_id == "job-1"
    assert lease.request.to_payload()["seed"] == 1  # unknown OpenAI fields preserved
    (sent,) = server.received
    assert sent.path == FETCH
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["user-agent"] == "openbeepboop-node/9.9"
    assert sent.json() == {
        "node_id": "node-1",
        "models": ["llama3", "*"],
        "max_jobs": 3,
        "wait": 25,
        "version": "9.9",
    }
    # The long-poll must not hit the read timeout.
    assert client.read_timeout == 25 + READ_TIMEOUT_MARGIN_SECONDS


async def test_requests_share_one_kept_alive_connection(
    server: LoopbackServer, client: QueueClient
) -> None:
    server.respond = always(Reply(200, []))
    for _ in range(3):
        assert await client.fetch(["m"], 1, 0) == []
    assert len({request.peer for request in server.received}) == 1


async def test_submit_and_heartbeat_round_trip(server: LoopbackServer, client: QueueClient) -> None:
    def by_path(request: Received) -> Reply:
        if request.path == "/internal/queue/submit":
            return Reply(
                200, {"acks": [{"job_id": "job-1", "ack": "accepted", "status": "QUEUED"}]}
            )
        return Reply(200, {"lease_seconds": 300, "extended": ["job-1"], "cancelled": ["job-2"]})

    server.respond = by_path
    (ack,) = await client.submit([ReleaseOutcome(job_id="job-1", lease_token="tok")])
    assert ack.ack == "accepted"
    answer = await client.heartbeat(
        [LeaseRef(job_id="job-1", lease_token="a"), LeaseRef(job_id="job-2", lease_token="b")],
        ["llama3"],
    )
    assert answer.extended == ["job-1"] and answer.cancelled == ["job-2"] and answer.lost == []
    assert [request.path for request in server.received] == [
        "/internal/queue/submit",
        "/internal/queue/heartbeat",
    ]


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_key(server: LoopbackServer, client: QueueClient, status: int) -> None:
    server.respond = always(
        Reply(status, {"error": {"message": "invalid API key", "type": "authentication_error"}})
    )
    with pytest.raises(KeyRejectedError, match="invalid API key") as caught:
        await client.fetch(["m"], 1, 0)
    assert caught.value.status_code == status
    assert KEY not in str(caught.value)


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_overload_and_server_errors_mean_retry_later(
    server: LoopbackServer, client: QueueClient, status: int
) -> None:
    server.respond = always(Reply(status, text="busy", headers={"Retry-After": "7"}))
    with pytest.raises(ServerUnavailableError, match="busy") as caught:
        await client.submit([ReleaseOutcome(job_id="job-1", lease_token="t")])
    assert caught.value.retry_after == 7.0


async def test_a_refused_connection_means_retry_later() -> None:
    with LoopbackServer(always(Reply(200, []))) as gone:
        url = gone.url
    client = QueueClient(url, KEY, "node-1")
    try:
        with pytest.raises(ServerUnavailableError, match="cannot connect"):
            await client.fetch(["m"], 1, 0)
    finally:
        await client.aclose()


async def test_a_dropped_connection_means_retry_later(
    server: LoopbackServer, client: QueueClient
) -> None:
    server.respond = always(DROP)
    # Connected, then dropped: not worded as a connection that was never made.
    with pytest.raises(ServerUnavailableError) as caught:
        await client.fetch(["m"], 1, 0)
    assert str(caught.value) == f"{server.url} closed the connection without answering"
    # ... and the next request gets through on a new connection.
    server.respond = always(Reply(200, []))
    assert await client.fetch(["m"], 1, 0) == []


async def test_an_answer_slower_than_the_read_timeout_means_retry_later(
    server: LoopbackServer,
) -> None:
    let_go = threading.Event()

    def stall(request: Received) -> Reply:
        let_go.wait(30)
        return Reply(200, [])

    server.respond = stall
    client = QueueClient(server.url, KEY, "node-1", fetch_wait=0, read_margin=0.2)
    try:
        with pytest.raises(ServerUnavailableError, match="timed out"):
            await client.fetch(["m"], 1, 0)
    finally:
        let_go.set()
        await client.aclose()


async def test_a_delivery_retried_after_timeouts_may_outlast_the_read_timeout(
    server: LoopbackServer,
) -> None:
    """A server that takes 1 s to record results: a delivery cut by the 0.2 s read
    timeout (its allowance: 0.4 s) goes through when retried after three timeouts,
    given 3.2 s (within the 4 s lease), which the read timeout must not cut short."""
    let_go = threading.Event()

    def busy_writer(request: Received) -> Reply:
        if request.path == FETCH:
            return Reply(200, [{**LEASE, "lease_seconds": 4.0}])
        let_go.wait(1.0)
        return Reply(200, {"acks": [{"job_id": "job-1", "ack": "accepted"}]})

    server.respond = busy_writer
    client = QueueClient(server.url, KEY, "node-1", fetch_wait=0, read_margin=0.2)
    client.connect_timeout = 0.2
    release = [ReleaseOutcome(job_id="job-1", lease_token="tok")]
    try:
        await client.fetch(["llama3"], 1, 0)  # the lease's length is learned here
        with pytest.raises(ServerUnavailableError, match="timed out") as cut:
            await client.submit(release)
        assert cut.value.timed_out
        (ack,) = await client.submit(release, patience=3)
    finally:
        let_go.set()
        await client.aclose()
    assert ack.ack == "accepted"


async def test_a_200_that_is_not_the_contract_is_an_outage(
    server: LoopbackServer, client: QueueClient
) -> None:
    server.respond = always(Reply(200, text="<html>captive portal</html>"))
    with pytest.raises(ServerUnavailableError, match="unexpected answer"):
        await client.fetch(["m"], 1, 0)


@pytest.mark.parametrize(
    "odd", [{"job_id": ""}, {"lease_token": ""}, {"job_id": "j" * 129}, {"lease_token": "t" * 129}]
)
async def test_a_lease_the_node_could_never_hand_back_is_skipped(
    server: LoopbackServer, client: QueueClient, odd: dict[str, str]
) -> None:
    # Its id or token would be refused by the node's own release or delivery
    # later: it is left to expire, and the good lease beside it still runs.
    good = {**LEASE, "job_id": "job-good"}
    server.respond = always(Reply(200, [{**LEASE, **odd}, good]))
    refused: list[ErrorOutcome] = []
    leases = await client.fetch(["m"], 2, 0, refuse=refused.append)
    assert [lease.job_id for lease in leases] == ["job-good"]
    assert refused == []


async def test_one_unreadable_lease_does_not_cost_the_good_ones(
    server: LoopbackServer, client: QueueClient
) -> None:
    bad = {**LEASE, "job_id": "job-bad", "request": {"model": "llama3", "messages": "nope"}}
    server.respond = always(Reply(200, [{**LEASE, "job_id": "job-a"}, bad, "junk", LEASE]))
    refused: list[ErrorOutcome] = []
    leases = await client.fetch(["llama3"], 4, 0, refuse=refused.append)
    assert [lease.job_id for lease in leases] == ["job-a", "job-1"]
    (outcome,) = refused
    assert (outcome.job_id, outcome.lease_token) == ("job-bad", "tok")
    assert outcome.error.type == INVALID_LEASE and outcome.error.retryable is True
    assert "request.messages" in outcome.error.message


async def test_invalid_request_is_not_retried(server: LoopbackServer, client: QueueClient) -> None:
    server.respond = always(
        Reply(400, {"error": {"message": "'models': too many", "type": "invalid_request_error"}})
    )
    with pytest.raises(ServerRequestError, match="too many") as caught:
        await client.fetch(["m"], 1, 0)
    assert caught.value.status_code == 400


def test_proxy_comes_from_the_environment_unless_bypassed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_for("http://queue.example:8000") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.corp")
    assert proxy_for("https://queue.example") == "http://proxy.corp:3128"
    assert proxy_for("http://queue.example") is None
    assert proxy_for("https://queue.internal.corp") is None


async def test_a_large_fetch_answer_is_parsed_off_the_event_loop(
    server: LoopbackServer, client: QueueClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed_on: list[str] = []
    real_parse = QueueClient._parse

    def parse(self: QueueClient, answer: Any, parse: Any) -> Any:
        parsed_on.append(threading.current_thread().name)
        return real_parse(self, answer, parse)

    monkeypatch.setattr(QueueClient, "_parse", parse)
    long_message = {"role": "user", "content": "x" * (OFF_LOOP_PARSE_BYTES + 1)}
    big = {**LEASE, "request": {"model": "llama3", "messages": [long_message]}}
    server.respond = always(Reply(200, [big]))
    (lease,) = await client.fetch(["llama3"], 1, 0)
    server.respond = always(Reply(200, [LEASE]))
    await client.fetch(["llama3"], 1, 0)
    assert lease.job_id == "job-1"
    main = threading.current_thread().name
    assert parsed_on[0] != main and parsed_on[1] == main
