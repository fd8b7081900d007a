"""A wait rides out a server restart: refused connections and 502/503/504 are tried again.

The restart is real: a stand-in server on loopback closes its port (the
client's connections are refused) and opens it again once the client has
said the server is unreachable, which is after a plain request would
already have given up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import respx
from conftest import API_KEY, entry_body
from openbeepboop import APIConnectionError, AsyncClient, AuthenticationError, Client, _constants
from openbeepboop._progress import NoProgress
from openbeepboop._waiting import Outage
from restartable_server import RestartableServer

#: Safety net of every wait and join here: generous on a slow, shared box.
SAFETY_SECONDS = 60.0


class Recorder(NoProgress):
    """A wait's reporter that keeps what it is told about an unreachable server."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.told = threading.Event()

    def unreachable(self, message: str) -> None:
        self.messages.append(message)
        self.told.set()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[RestartableServer]:
    # Bound the outage so that a broken test ends instead of waiting 15 minutes.
    monkeypatch.setattr(_constants, "WAIT_OUTAGE_SECONDS", SAFETY_SECONDS)
    made = RestartableServer("QUEUED")
    yield made
    made.stop()


def restart_after_notice(server: RestartableServer, told: threading.Event) -> threading.Thread:
    """Stop the server after its first answer; start it, jobs done, once the client says so."""

    def run() -> None:
        assert server.answered.wait(SAFETY_SECONDS)
        server.stop()
        assert told.wait(SAFETY_SECONDS)
        server.status = "COMPLETED"
        server.start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_wait_rides_out_a_server_restart(server: RestartableServer) -> None:
    seen = Recorder()
    restarter = restart_after_notice(server, seen.told)
    with Client(base_url=server.url, api_key=API_KEY) as client:
        entries = client.jobs.wait(["job-1", "job-2"], progress=seen)
    restarter.join(SAFETY_SECONDS)
    assert [entry.status for entry in entries] == ["COMPLETED", "COMPLETED"]
    # Said once, however many times it was tried while the port was closed.
    assert len(seen.messages) == 1
    assert "the server does not answer" in seen.messages[0]
    assert "Connection refused" in seen.messages[0] or "connect" in seen.messages[0]


async def test_async_wait_rides_out_a_server_restart(server: RestartableServer) -> None:
    seen = Recorder()
    restarter = restart_after_notice(server, seen.told)
    async with AsyncClient(base_url=server.url, api_key=API_KEY) as client:
        entries = await client.jobs.wait(["job-1"], timeout=SAFETY_SECONDS, progress=seen)
    restarter.join(SAFETY_SECONDS)
    assert entries[0].status == "COMPLETED"
    assert len(seen.messages) == 1


def test_job_get_rides_out_a_server_restart(server: RestartableServer) -> None:
    told = threading.Event()
    restarter = restart_after_notice(server, told)
    with Client(base_url=server.url, api_key=API_KEY) as client:
        original = NoProgress.unreachable

        def tell(progress: NoProgress, message: str) -> None:
            original(progress, message)
            told.set()

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(NoProgress, "unreachable", tell)
            result = client.jobs.result("job-1")
    restarter.join(SAFETY_SECONDS)
    assert result is not None
    assert result.choices[0].message.content == "answer to job-1"


def test_a_server_gone_for_good_ends_the_wait(
    server: RestartableServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_constants, "WAIT_OUTAGE_SECONDS", 0.2)
    server.stop()
    seen = Recorder()
    with Client(base_url=server.url, api_key=API_KEY) as client:
        with pytest.raises(APIConnectionError):
            client.jobs.wait(["job-1"], progress=seen)
        assert len(seen.messages) == 1
        assert "for up to 0.2s" in seen.messages[0]
        # A call that does not wait keeps the plain retry budget.
        with pytest.raises(APIConnectionError):
            client.jobs.poll(["job-1"])


def test_503s_during_a_wait_are_ridden_out(respx_mock: respx.MockRouter) -> None:
    respx_mock.post("http://obb.test/v1/results/poll").mock(
        side_effect=[
            *[respx.MockResponse(503) for _ in range(5)],  # more than max_retries + 1
            respx.MockResponse(200, json=[entry_body("job-1", "COMPLETED")]),
        ]
    )
    with Client(base_url="http://obb.test", api_key=API_KEY) as client:
        entries = client.jobs.wait(["job-1"], progress=Recorder())
    assert entries[0].status == "COMPLETED"


def test_other_failures_still_end_a_wait_at_once(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post("http://obb.test/v1/results/poll").respond(401)
    with (
        Client(base_url="http://obb.test", api_key=API_KEY) as client,
        pytest.raises(AuthenticationError),
    ):
        client.jobs.wait(["job-1"])
    assert route.call_count == 1


def test_outage_gives_up_at_the_wait_deadline() -> None:
    now = [100.0]
    outage = Outage(deadline=101.0, clock=lambda: now[0], limit=1000.0)
    refused = APIConnectionError()
    assert outage.retry_in(refused) is not None
    assert outage.began
    assert "until the wait's timeout" in outage.describe(refused)
    now[0] = 101.0
    assert outage.retry_in(refused) is None


def test_outage_without_a_deadline_gives_up_after_its_limit() -> None:
    now = [0.0]
    outage = Outage(deadline=None, clock=lambda: now[0], limit=10.0)
    refused = APIConnectionError()
    assert outage.retry_in(refused) is not None
    now[0] = 5.0
    assert outage.retry_in(refused) is not None
    assert not outage.began  # said once per outage
    now[0] = 10.0
    assert outage.retry_in(refused) is None
    outage.over()  # the server answered: a new outage gets a new allowance
    assert outage.retry_in(refused) is not None
    assert outage.began
