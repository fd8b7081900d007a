"""A submit whose answer is lost, and a server that never answers, on real sockets.

The stand-in server keeps jobs by ``Idempotency-Key`` as the real one does
(the same key and body: the job made the first time; the same key and
another body: 422), and can cut its answers short, as a proxy dropping the
connection does. The black hole accepts connections, reads the request and
never answers. Timeouts here are a fraction of a second, set in the config.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import API_KEY, Cli, job_body
from openbeepboop import APIError, APITimeoutError, Client
from openbeepboop._config import write_config_file
from openbeepboop.cli import no_answer
from openbeepboop.cli.errors import lost_batch, lost_submit
from openbeepboop_schemas import CHAT_COMPLETIONS_PATH
from raw_server import RawServer
from restartable_server import JsonHandler

#: Bytes of an answer that get through before the connection is cut (as QA's proxy did).
CUT_AFTER = 50
#: The client's timeout per try against the black hole: short, so tests stay fast.
TRY_SECONDS = 0.3
#: How long the black hole holds a connection at most: far past any try.
SAFETY_SECONDS = 60.0


class SubmitServer:
    """Submits kept by Idempotency-Key; the next ``cuts`` answers are cut short."""

    def __init__(self) -> None:
        self.cuts = 0
        #: Idempotency-Key -> (SHA-256 of the body it came with, the job made).
        self.jobs: dict[str, tuple[str, dict]] = {}
        #: The Idempotency-Key of every submit received, in order.
        self.keys: list[str | None] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def submit(self, key: str | None, body: bytes) -> tuple[int, dict, bool]:
        """Status, answer, and whether to cut it: what the server does with one submit."""
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            self.keys.append(key)
            cut = self.cuts > 0
            self.cuts -= int(cut)
            if key in self.jobs:
                first, job = self.jobs[key]
                if first != digest:
                    message = "this Idempotency-Key was first sent with a different request"
                    return 422, {"error": {"message": message, "type": "x"}}, cut
                return 202, job, cut
            job = job_body(f"job-{len(self.jobs) + 1}", model=json.loads(body)["model"])
            self.jobs[key or f"no-key-{len(self.jobs)}"] = (digest, job)
            return 202, job, cut

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                assert self.path == CHAT_COMPLETIONS_PATH
                status, data, cut = owner.submit(self.headers.get("Idempotency-Key"), body)
                if not cut:
                    self.answer(status, data)
                    return
                answer = json.dumps(data).encode()
                head = f"HTTP/1.1 {status} Accepted\r\nContent-Length: {len(answer)}\r\n\r\n"
                self.wfile.write((head.encode() + answer)[:CUT_AFTER])
                self.wfile.flush()
                # A reset, not a clean close: what QA's proxy sent.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                self.connection.close()
                self.close_connection = True

        return Handler


def hold(conn: socket.socket, stop: threading.Event) -> None:
    """A black hole's answer: none, the connection held until the client gives up."""
    conn.settimeout(SAFETY_SECONDS)
    while conn.recv(65536):
        pass


@pytest.fixture
def submits() -> Iterator[SubmitServer]:
    made = SubmitServer()
    yield made
    made.stop()


@pytest.fixture
def black_hole() -> Iterator[RawServer]:
    made = RawServer(hold)
    yield made
    made.close()


def cli_for(tmp_path: Path, url: str, **settings: object) -> Cli:
    config = tmp_path / "lost_config.toml"
    write_config_file(config, {"server_url": url, "api_key": API_KEY, **settings})
    return Cli(config)


# --- F1: a lost submit answer ------------------------------------------------


def test_a_lost_submit_names_its_key_and_the_same_key_finds_the_job(
    tmp_path: Path, submits: SubmitServer
) -> None:
    cli = cli_for(tmp_path, submits.url, max_retries=2)
    submits.cuts = 3  # every try of the first run
    first = cli("submit", "cli-cut10", "--model", "m1")
    assert first.exit_code == 1
    assert first.stdout == ""
    lines = first.stderr.strip().splitlines()
    assert len(lines) == 1, first.stderr
    line = lines[0]
    assert line.startswith("Error: the connection to the server at ") and "broke" in line
    assert "the job may already be queued" in line
    assert "openbeepboop-client list" in line and f"--config {cli.config}" in line
    assert "; retry)" not in line  # the old advice, which queued the job twice
    # The run's three tries carried one key, and the line names it.
    assert len(submits.keys) == 3 and len(set(submits.keys)) == 1
    key = submits.keys[0]
    assert key and f"--idempotency-key {key}:" in line
    assert len(submits.jobs) == 1  # the job was made, though no id came back

    again = cli("submit", "cli-cut10", "--model", "m1", "--idempotency-key", key)
    assert again.exit_code == 0, again.stderr
    assert again.stdout == "Job submitted successfully. ID: job-1\n"
    assert len(submits.jobs) == 1  # answered with the first job, not queued twice


def test_a_key_given_up_front_makes_any_number_of_runs_one_job(
    tmp_path: Path, submits: SubmitServer
) -> None:
    cli = cli_for(tmp_path, submits.url, max_retries=0)
    submits.cuts = 1
    command = ("submit", "nightly report", "--model", "m1", "--idempotency-key", "nightly-7")
    lost = cli(*command)
    assert lost.exit_code == 1
    assert "--idempotency-key nightly-7:" in lost.stderr
    answers = [cli(*command, "--json") for _ in range(2)]
    assert [json.loads(result.stdout)["id"] for result in answers] == ["job-1", "job-1"]
    assert submits.keys == ["nightly-7"] * 3
    # Another request under the same key is refused by the server, nothing queued.
    other = cli("submit", "another prompt", "--model", "m1", "--idempotency-key", "nightly-7")
    assert other.exit_code == 1
    assert "first sent with a different request" in other.stderr
    assert len(submits.jobs) == 1


@pytest.mark.parametrize(
    "key", ["", "with space", "caf\u00e9", "tab\there", "k" * 256], ids=lambda k: repr(k)[:12]
)
def test_a_key_the_server_would_refuse_is_a_usage_error(
    tmp_path: Path, submits: SubmitServer, key: str
) -> None:
    cli = cli_for(tmp_path, submits.url)
    result = cli("submit", "hi", "--model", "m1", "--idempotency-key", key)
    assert result.exit_code == 2
    assert "--idempotency-key" in result.stderr and "printable ASCII" in result.stderr
    assert submits.keys == []  # nothing sent


def test_a_submit_answered_in_time_adds_nothing_and_sends_the_key_given(
    tmp_path: Path, submits: SubmitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(no_answer, "NOTICE_AFTER_SECONDS", 0.0)
    cli = cli_for(tmp_path, submits.url)
    key = "k" * 254 + "~"  # the longest key, and the last character allowed
    result = cli("submit", "hi", "--model", "m1", "--idempotency-key", key)
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout == "Job submitted successfully. ID: job-1\n"
    assert submits.keys == [key]


def test_a_submit_that_never_connected_does_not_say_it_may_be_queued(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cli = cli_for(tmp_path, f"http://127.0.0.1:{port}", max_retries=1)
    result = cli("submit", "hi", "--model", "m1", "--idempotency-key", "run-1")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: could not connect"), result.stderr
    assert "may already be queued" not in lines[0]


def test_a_submit_to_a_black_hole_may_be_queued_too(
    tmp_path: Path, black_hole: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(no_answer, "NOTICE_AFTER_SECONDS", 0.0)
    cli = cli_for(tmp_path, black_hole.url, timeout=TRY_SECONDS, max_retries=1)
    result = cli("submit", "hi", "--model", "m1")
    assert result.exit_code == 1
    assert result.stdout == ""
    warning, error = result.stderr.strip().splitlines()
    assert warning.startswith(f"Warning: no answer yet from the server at {black_hole.url}")
    assert error.startswith(f"Error: the server at {black_hole.url} did not answer in time")
    assert re.search(r"--idempotency-key [0-9a-f-]{36}: ", error), error


# --- F2: a one-shot command against a server that never answers -------------


@pytest.mark.parametrize("command", [["poll", "job-1"], ["list"], ["submit", "hi", "-m", "m1"]])
def test_a_command_with_no_answer_says_so_once_before_its_error(
    tmp_path: Path,
    black_hole: RawServer,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    monkeypatch.setattr(no_answer, "NOTICE_AFTER_SECONDS", TRY_SECONDS / 2)
    cli = cli_for(tmp_path, black_hole.url, timeout=TRY_SECONDS, max_retries=2)
    result = cli(*command)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    warning, error = lines
    assert warning.startswith(f"Warning: no answer yet from the server at {black_hole.url} after ")
    assert "(no answer in time); trying again for at most " in warning
    assert "(2 more tries of up to 0.3s each; Ctrl-C stops)" in warning
    assert error.startswith("Error: ") and "did not answer in time" in error
    assert black_hole.connections == 3


def test_a_wait_pauses_the_notice_for_its_own_outage_line(
    black_hole: RawServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(no_answer, "NOTICE_AFTER_SECONDS", 0.0)
    made = Client(base_url=black_hole.url, api_key=API_KEY, timeout=TRY_SECONDS, max_retries=1)
    with no_answer.watch(made) as client:
        with no_answer.paused(client), pytest.raises(APITimeoutError):
            client.models.list()
        assert capsys.readouterr().err == ""
        with pytest.raises(APITimeoutError):
            client.models.list()
        assert capsys.readouterr().err.startswith("Warning: no answer yet from the server")


def test_a_cause_ending_in_a_full_stop_does_not_end_the_line_early() -> None:
    # httpx's own words for a connection closed without an answer end in one.
    cause = APIError(
        "the server at http://q broke: Server disconnected without sending a response."
    )
    for line in (lost_submit(cause, "k-1"), lost_batch(cause, "k-1")):
        assert "response; the " in line and ".;" not in line
