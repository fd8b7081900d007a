"""The status line of waiting commands: its words, its clock, its redraws and its erasure."""

from __future__ import annotations

import io
import threading
import time

from conftest import entry_body
from openbeepboop.cli.status_line import StatusLine, describe_wait, elapsed, one_job_status
from openbeepboop_schemas import PollEntry


def entry(job_id: str, status: str, **fields: object) -> PollEntry:
    return PollEntry.model_validate(entry_body(job_id, status, **fields))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Stream(io.StringIO):
    """A stream whose writes can be waited for."""

    def __init__(self) -> None:
        super().__init__()
        self.written = threading.Semaphore(0)

    def write(self, text: str) -> int:
        count = super().write(text)
        self.written.release()
        return count


def test_elapsed() -> None:
    assert [elapsed(s) for s in (0, 59.9, 65, 3600 + 120)] == ["0s", "59s", "1m05s", "1h02m"]


def test_one_job_in_words() -> None:
    assert one_job_status(entry("j", "QUEUED")) == "QUEUED, no node has taken it yet"
    assert (
        one_job_status(entry("j", "QUEUED", attempts=2)) == "QUEUED, to be retried after attempt 2"
    )
    assert one_job_status(entry("j", "PROCESSING", attempts=1)) == "PROCESSING, attempt 1"
    running_on = entry("j", "PROCESSING", attempts=2, node_id="gpu-box-1")
    assert one_job_status(running_on) == "PROCESSING on gpu-box-1, attempt 2"


def test_many_jobs_and_their_models() -> None:
    pending = [entry("a", "QUEUED", model="x"), entry("b", "PROCESSING", model="y")]
    assert describe_wait(["a", "b", "c"], None, 1, pending) == (
        "3 jobs (x, y): 1 queued, 1 running, 1 finished"
    )
    many = [entry(str(n), "QUEUED", model=f"m{n}") for n in range(3)]
    assert describe_wait(["0", "1", "2"], None, 0, many).startswith("3 jobs (3 models):")
    assert describe_wait(["job-1"], "llama3", 0, []) == "job-1 (llama3): asking the server"


def test_the_line_says_how_long_out_of_how_long() -> None:
    clock, stream = Clock(), Stream()
    line = StatusLine(["job-1"], model="m", timeout=60, stream=stream, tick=3600, clock=clock)
    clock.now += 65
    line.pending([entry("job-1", "QUEUED", model="m")])
    line.close()
    assert "\r\x1b[KWaiting for job-1 (m): asking the server · 0s of 60s" in stream.getvalue()
    assert "Waiting for job-1 (m): QUEUED, no node has taken it yet · 1m05s of 60s" in (
        stream.getvalue()
    )
    assert stream.getvalue().endswith("\r\x1b[K")


def test_the_clock_moves_between_polls() -> None:
    clock, stream = Clock(), Stream()
    line = StatusLine(["job-1"], stream=stream, tick=0.01, clock=clock)
    try:
        clock.now += 7  # no poll answers: only the ticks can show it
        deadline = time.monotonic() + 30
        while "· 7s" not in stream.getvalue():
            assert stream.written.acquire(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        line.close()
    erased = stream.getvalue()
    assert erased.endswith("\r\x1b[K")
    line.draw()  # closed: stays erased
    assert stream.getvalue() == erased


def test_an_unreachable_server_gets_a_line_of_its_own_above_the_status() -> None:
    clock, stream = Clock(), Stream()
    line = StatusLine(["job-1"], stream=stream, tick=3600, clock=clock)
    line.unreachable("the server does not answer (refused); still waiting")
    line.close()
    text = stream.getvalue()
    assert "\r\x1b[KWarning: the server does not answer (refused); still waiting\n" in text
    # The status line is drawn again below the warning, then erased at the end.
    after = text.split("still waiting\n", 1)[1]
    assert after.startswith("\r\x1b[KWaiting for job-1")
    assert text.endswith("\r\x1b[K")
