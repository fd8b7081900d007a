"""Delivery: batched, spooled unless acknowledged, retried through outages, split on refusal.

``Harness`` delivers with ``spool_after=0`` (every result written while it is
sent) unless a test asks for the node's write-behind: results then reach the
disk only when their ack is late, their submit failed, or the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest
from conditions import wait_for
from fake_queue import DROP, NODE_KEY, LoopbackServer, Received, Reply, always
from openbeepboop_node import delivery
from openbeepboop_node.backoff import JITTER_FLOOR, Backoff, Connectivity
from openbeepboop_node.delivery import Deliverer, NotKept
from openbeepboop_node.queue_client import QueueClient
from openbeepboop_node.spool import OutcomeKey, Spool
from openbeepboop_schemas import ErrorOutcome, NodeError, Outcome, ReleaseOutcome, ResultOutcome
from test_spool import result

SUBMIT = "/internal/queue/submit"


def error(job_id: str) -> ErrorOutcome:
    return ErrorOutcome(
        job_id=job_id, lease_token=f"t-{job_id}", error=NodeError(message="e", retryable=True)
    )


def accept_all(request: Received) -> Reply:
    outcomes = request.json()["outcomes"]
    return Reply(200, {"acks": [{"job_id": o["job_id"], "ack": "accepted"} for o in outcomes]})


class Harness:
    def __init__(
        self,
        tmp_path: Path,
        linger: float = 0.02,
        more_coming: Callable[[], bool] | None = None,
        spool: Spool | None = None,
        spool_after: float = 0.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.server = LoopbackServer(accept_all)
        self.server.start()
        self.client = QueueClient(self.server.url, NODE_KEY, "n")
        self.spool = spool if spool is not None else Spool(tmp_path / "spool.sqlite3")
        self.deliverer = Deliverer(
            self.client,
            self.spool,
            Connectivity(self.server.url),
            backoff or Backoff(0.01, 0.05),
            linger=linger,
            spool_after=spool_after,
            more_coming=more_coming,
        )

    async def __aenter__(self) -> Harness:
        self.task = asyncio.create_task(self.deliverer.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.deliverer.close()
        await self.client.aclose()
        self.server.stop()

    def sent_batches(self) -> list[list[str]]:
        return [[o["job_id"] for o in body["outcomes"]] for body in self.server.bodies(SUBMIT)]


async def test_outcomes_finishing_together_share_one_submit(tmp_path: Path) -> None:
    async with Harness(tmp_path) as h:
        h.server.respond = accept_all
        for i in range(5):
            h.deliverer.put(error(f"job-{i}"))
        assert await h.deliverer.wait_idle(10)
    assert h.sent_batches() == [[f"job-{i}" for i in range(5)]]
    assert len(h.spool) == 0


class SlowSpool(Spool):
    """A spool whose writes wait until the test lets them through."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.release = threading.Event()

    def add(self, outcomes: Sequence[Outcome], forget: Iterable[OutcomeKey] = ()) -> None:
        if not self.release.wait(30):
            raise AssertionError("the test never let the spool write through")
        super().add(outcomes, forget)


async def test_the_send_does_not_wait_for_the_spool_write(tmp_path: Path) -> None:
    # Whether each submit went out before the spool write could have ended.
    sent_while_writing: list[bool] = []
    slow = SlowSpool(tmp_path / "slow.sqlite3")
    h = Harness(tmp_path, spool=slow)

    def note_and_accept(request: Received) -> Reply:
        sent_while_writing.append(not slow.release.is_set())
        return accept_all(request)

    h.server.respond = note_and_accept
    async with h:
        durable = h.deliverer.put(error("job-1"))
        released = h.deliverer.put(ReleaseOutcome(job_id="job-2", lease_token="t"))
        # Acked by the server while the fsync is still running ...
        assert await h.deliverer.wait_idle(10)
        assert sent_while_writing == [True]
        assert released.done() and not durable.done()
        slow.release.set()
        # ... and still nothing is left behind once the write lands: the
        # deletion was queued behind it.
        await asyncio.wait_for(durable, 10)
        await wait_for(lambda: len(slow) == 0, what="the acked result to leave the spool")


class RecordingSpool(Spool):
    """A spool that notes every transaction: (job ids written, job ids forgotten)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes: list[tuple[list[str], list[str]]] = []

    def add(self, outcomes: Sequence[Outcome], forget: Iterable[OutcomeKey] = ()) -> None:
        forget = list(forget)
        self.writes.append(([o.job_id for o in outcomes], [job_id for job_id, _ in forget]))
        super().add(outcomes, forget)

    def remove(self, keys: Iterable[OutcomeKey]) -> None:
        keys = list(keys)
        self.writes.append(([], [job_id for job_id, _ in keys]))
        super().remove(keys)


def one_answer_at_a_time(turns: threading.Semaphore) -> Callable[[Received], Reply]:
    """A responder that holds each submit until the test gives it a turn."""

    def respond(request: Received) -> Reply:
        if not turns.acquire(timeout=30):
            raise AssertionError("the test never let the submit through")
        return accept_all(request)

    return respond


async def test_acked_rows_leave_the_spool_with_the_next_write(tmp_path: Path) -> None:
    spool = RecordingSpool(tmp_path / "rec.sqlite3")
    h = Harness(tmp_path, linger=0, spool=spool)
    turns = threading.Semaphore(0)
    h.server.respond = one_answer_at_a_time(turns)
    async with h:
        h.deliverer.put(error("job-1"))
        await wait_for(lambda: len(h.server.bodies(SUBMIT)) == 1, what="job-1's submit")
        # Handed over while job-1's submit is in flight: written at once.
        await asyncio.wait_for(h.deliverer.put(error("job-2")), 10)
        turns.release()  # job-1 acked; job-2 goes out and waits in its turn
        await wait_for(lambda: len(h.server.bodies(SUBMIT)) == 2, what="job-2's submit")
        await asyncio.wait_for(h.deliverer.put(error("job-3")), 10)
        turns.release(2)
        assert await h.deliverer.wait_idle(10)
        await wait_for(lambda: len(spool) == 0, what="an empty spool")
    # job-1's deletion rode along with job-3's write; only the last one,
    # with nothing left to send, took a transaction of its own.
    assert spool.writes == [
        (["job-1"], []),
        (["job-2"], []),
        (["job-3"], ["job-1"]),
        ([], ["job-2", "job-3"]),
    ]


@pytest.mark.parametrize("spool_after", [0.0, 0.2])
async def test_a_result_handed_over_during_a_stalled_submit_is_spooled_in_time(
    tmp_path: Path, spool_after: float
) -> None:
    # A submit that hangs (a partition, a server trickling its answer) must
    # not keep the results finishing meanwhile in memory only.
    turns = threading.Semaphore(0)
    h = Harness(tmp_path, linger=0, spool_after=spool_after)
    h.server.respond = one_answer_at_a_time(turns)
    async with h:
        h.deliverer.put(error("job-1"))
        await wait_for(lambda: len(h.server.bodies(SUBMIT)) == 1, what="job-1's submit")
        durable = h.deliverer.put(error("job-2"))
        # Well within the submit's stall (30 s), however long it lasts.
        await asyncio.wait_for(durable, 10)
        on_disk = {o.job_id for o in Spool(tmp_path / "spool.sqlite3").pending()}
        assert "job-2" in on_disk
        assert len(h.server.bodies(SUBMIT)) == 1  # job-1's submit still stalled
        turns.release(2)
        assert await h.deliverer.wait_idle(10)
        await wait_for(lambda: len(h.spool) == 0, what="the acked results to leave the spool")
    assert h.sent_batches() == [["job-1"], ["job-2"]]


@pytest.mark.parametrize("spool_after", [0.0, 3600.0])
async def test_an_unsent_result_is_on_disk(tmp_path: Path, spool_after: float) -> None:
    # Written at once when its submit fails, however long the ack may take.
    async with Harness(tmp_path, spool_after=spool_after) as h:
        h.server.respond = always(DROP)
        durable = h.deliverer.put(error("job-1"))
        h.deliverer.put(ReleaseOutcome(job_id="job-2", lease_token="t"))
        await asyncio.wait_for(durable, 10)
        # The error is on disk (for the next start); the release is never spooled.
        assert [o.job_id for o in Spool(tmp_path / "spool.sqlite3").pending()] == ["job-1"]


async def test_retries_until_the_server_is_back(tmp_path: Path) -> None:
    async with Harness(tmp_path) as h:
        h.server.respond = always(DROP)
        h.deliverer.put(error("job-1"))
        await wait_for(lambda: len(h.server.received) >= 3, what="retries")
        assert len(h.spool) == 1
        h.server.respond = accept_all
        assert await h.deliverer.wait_idle(10)
    assert len(h.spool) == 0


async def test_outcomes_a_server_left_unanswered_are_sent_again_after_a_pause(
    tmp_path: Path,
) -> None:
    asked: list[float] = []

    def answer_none_at_first(request: Received) -> Reply:
        asked.append(time.monotonic())
        return Reply(200, {"acks": []}) if len(asked) == 1 else accept_all(request)

    async with Harness(tmp_path, backoff=Backoff(0.4, 0.4)) as h:
        h.server.respond = answer_none_at_first
        h.deliverer.put(error("job-1"))
        assert await h.deliverer.wait_idle(10)
    assert len(asked) == 2
    assert asked[1] - asked[0] >= 0.4 * JITTER_FLOOR  # at once, it was a hot loop


async def test_a_refused_batch_is_split_and_only_the_bad_outcome_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse_job_2(request: Received) -> Reply:
        ids = [o["job_id"] for o in request.json()["outcomes"]]
        if "job-2" in ids:
            return Reply(
                400, {"error": {"message": "bad outcome", "type": "invalid_request_error"}}
            )
        return accept_all(request)

    async with Harness(tmp_path) as h:
        h.server.respond = refuse_job_2
        with caplog.at_level(logging.ERROR, logger="openbeepboop_node"):
            for i in range(1, 4):
                h.deliverer.put(error(f"job-{i}"))
            assert await h.deliverer.wait_idle(10)
    assert h.sent_batches() == [["job-1", "job-2", "job-3"], ["job-1"], ["job-2"], ["job-3"]]
    assert "job job-2: server refused its outcome" in caplog.text
    assert h.deliverer.acks == {"accepted": 2}
    assert len(h.spool) == 0


async def test_restore_sends_what_an_earlier_run_left(tmp_path: Path) -> None:
    earlier = Spool(tmp_path / "spool.sqlite3")
    earlier.add([error("job-9")])
    earlier.close()
    h = Harness(tmp_path)
    h.server.respond = accept_all
    assert await h.deliverer.restore() == 1
    async with h:
        assert await h.deliverer.wait_idle(10)
    assert h.sent_batches() == [["job-9"]]


async def test_restored_outcomes_are_told_once_the_server_answered_them(tmp_path: Path) -> None:
    earlier = Spool(tmp_path / "spool.sqlite3")
    earlier.add([result("job-8"), error("job-9")])
    earlier.close()
    told: list[Outcome | NotKept] = []
    h = Harness(tmp_path)
    h.server.respond = always(DROP)
    assert await h.deliverer.restore(told.append) == 2
    async with h:
        await wait_for(lambda: len(h.server.received) >= 2, what="failed submits")
        assert told == []  # durable already, but not answered yet: nothing to say
        h.server.respond = accept_all
        assert await h.deliverer.wait_idle(10)
    assert sorted(told, key=lambda outcome: outcome.job_id) == [result("job-8"), error("job-9")]


def answering(ack: str) -> Callable[[Received], Reply]:
    """A server acknowledging every outcome with ``ack`` (the job now CANCELLED)."""

    def respond(request: Received) -> Reply:
        outcomes = request.json()["outcomes"]
        acks = [{"job_id": o["job_id"], "ack": ack, "status": "CANCELLED"} for o in outcomes]
        return Reply(200, {"acks": acks})

    return respond


@pytest.mark.parametrize("ack", ["stale", "rejected"])
@pytest.mark.parametrize("spool_after", [0.0, 3600.0])
async def test_an_outcome_the_server_did_not_keep_is_told_so(
    tmp_path: Path, ack: str, spool_after: float
) -> None:
    # spool_after=0: on disk (told durable) before the ack; 3600: never on disk.
    told: list[Outcome | NotKept] = []
    answer = answering(ack)

    def once_on_disk(request: Received) -> Reply:
        return answer(request) if told else DROP  # not told durable yet: sent again

    async with Harness(tmp_path, spool_after=spool_after) as h:
        h.server.respond = once_on_disk if spool_after == 0 else answer
        h.deliverer.put(result("job-1"), told.append)
        assert await h.deliverer.wait_idle(10)
    assert len(h.spool) == 0
    *before, last = told
    assert before == ([result("job-1")] if spool_after == 0 else [])
    assert isinstance(last, NotKept) and last.outcome == result("job-1")
    assert last.ack.ack == ack
    assert last.reason().startswith(f"{ack}: ")
    if ack == "stale":
        assert last.reason().endswith("the job is CANCELLED")


async def test_a_lone_outcome_does_not_wait_out_the_linger(tmp_path: Path) -> None:
    async with Harness(tmp_path, linger=3600, more_coming=lambda: False) as h:
        h.server.respond = accept_all
        h.deliverer.put(error("job-1"))
        assert await h.deliverer.wait_idle(30)
    assert h.sent_batches() == [["job-1"]]


async def test_the_linger_applies_while_other_jobs_may_finish(tmp_path: Path) -> None:
    async with Harness(tmp_path, linger=3600, more_coming=lambda: True) as h:
        h.server.respond = accept_all
        h.deliverer.put(error("job-1"))
        assert not await h.deliverer.wait_idle(0.2)
    assert h.sent_batches() == []


async def test_an_acknowledged_result_is_never_written(tmp_path: Path) -> None:
    spool = RecordingSpool(tmp_path / "rec.sqlite3")
    async with Harness(tmp_path, spool=spool, spool_after=3600) as h:
        h.server.respond = accept_all
        durable = [h.deliverer.put(error(f"job-{i}")) for i in range(3)]
        assert await h.deliverer.wait_idle(10)
        # Durable at the server: the job lines may be logged.
        assert all(future.done() for future in durable)
    assert h.sent_batches() == [["job-0", "job-1", "job-2"]]
    assert spool.writes == []


async def test_a_result_whose_ack_is_late_is_spooled_meanwhile(tmp_path: Path) -> None:
    spool = RecordingSpool(tmp_path / "rec.sqlite3")
    answer = threading.Event()

    def ack_when_let(request: Received) -> Reply:
        answer.wait(30)
        return accept_all(request)

    async with Harness(tmp_path, spool=spool, spool_after=0.05) as h:
        h.server.respond = ack_when_let
        durable = h.deliverer.put(error("job-1"))
        # On disk while its submit still waits for the server ...
        await asyncio.wait_for(durable, 10)
        assert [o.job_id for o in Spool(tmp_path / "rec.sqlite3").pending()] == ["job-1"]
        await wait_for(lambda: len(h.server.bodies(SUBMIT)) == 1, what="job-1's submit")
        assert not answer.is_set()  # the server holds its ack until told
        answer.set()
        # ... and deleted once the ack came.
        assert await h.deliverer.wait_idle(10)
        await wait_for(lambda: len(spool) == 0, what="the acked result to leave the spool")
    assert spool.writes == [(["job-1"], []), ([], ["job-1"])]


async def test_what_is_unacknowledged_at_the_end_is_spooled(tmp_path: Path) -> None:
    answer = threading.Event()

    def hold(request: Received) -> Reply:
        answer.wait(30)
        return accept_all(request)

    h = Harness(tmp_path, spool_after=3600)
    h.server.respond = hold
    run = asyncio.create_task(h.deliverer.run())
    h.deliverer.put(error("job-1"))
    await wait_for(lambda: len(h.server.bodies(SUBMIT)) == 1, what="job-1's submit")
    assert len(h.spool) == 0
    # The run ends (the node stops) with the submit unanswered: persist writes it.
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    await h.deliverer.persist()
    assert [o.job_id for o in h.spool.pending()] == ["job-1"]
    answer.set()
    h.task = run
    await h.__aexit__()


def big_result(job_id: str) -> ResultOutcome:
    outcome = result(job_id)
    outcome.result.choices[0].message.content = "x" * 5000
    return outcome


async def test_a_result_too_large_for_the_server_is_delivered_as_its_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def limit_bodies(request: Received) -> Reply:
        if len(request.body) > 4000:
            return Reply(
                413,
                {"error": {"message": "body over 4000 bytes", "type": "invalid_request_error"}},
            )
        return accept_all(request)

    async with Harness(tmp_path) as h:
        h.server.respond = limit_bodies
        with caplog.at_level(logging.WARNING, logger="openbeepboop_node"):
            for outcome in [error("job-1"), big_result("job-2"), error("job-3"), error("job-4")]:
                h.deliverer.put(outcome)
            assert await h.deliverer.wait_idle(10)
    bodies = h.server.bodies(SUBMIT)
    # Halved until the too-large result stands alone, then sent as a failure.
    assert h.sent_batches() == [
        ["job-1", "job-2", "job-3", "job-4"],
        ["job-1", "job-2"],
        ["job-1"],
        ["job-2"],
        ["job-2"],
        ["job-3", "job-4"],
    ]
    failure = bodies[4]["outcomes"][0]
    assert failure["kind"] == "error"
    assert failure["error"]["type"] == "result_too_large"
    assert failure["error"]["retryable"] is False
    assert "body over 4000 bytes" in failure["error"]["message"]
    assert "bytes, more than the server accepts" in failure["error"]["message"]
    assert h.deliverer.acks == {"accepted": 4}
    assert "job job-2: the result is" in caplog.text
    assert len(h.spool) == 0


class FullSpool(Spool):
    """A spool on a full disk while ``full`` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.full = True
        self.failed = 0

    def add(self, outcomes: Sequence[Outcome], forget: Iterable[OutcomeKey] = ()) -> None:
        if self.full:
            self.failed += 1
            raise sqlite3.OperationalError("database or disk is full")
        super().add(outcomes, forget)


def hold_submits(request: Received) -> Reply | None:
    """No answer until the node gives up (a server that never acknowledges)."""
    while not request.gone():
        time.sleep(0.01)
    return DROP


async def test_a_failed_spool_write_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "SPOOL_RETRY_SECONDS", 0.05, raising=False)
    spool = FullSpool(tmp_path / "full.sqlite3")
    async with Harness(tmp_path, spool=spool, spool_after=0.05) as h:
        h.server.respond = hold_submits
        durable = h.deliverer.put(error("job-1"))
        await wait_for(lambda: spool.failed >= 1, what="a failed write")
        # Not on disk, so not durable: its job is not logged as finished.
        assert not durable.done()
        assert h.deliverer.unwritten_results() == 1
        spool.full = False  # space freed
        await asyncio.wait_for(durable, 10)
        assert [o.job_id for o in spool.pending()] == ["job-1"]
        assert h.deliverer.unwritten_results() == 0


async def test_shutdown_writes_again_what_a_failed_write_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "SPOOL_RETRY_SECONDS", 3600, raising=False)  # persist only
    spool = FullSpool(tmp_path / "full.sqlite3")
    h = Harness(tmp_path, spool=spool, spool_after=0.05)
    h.server.respond = hold_submits
    run = asyncio.create_task(h.deliverer.run())
    h.deliverer.put(error("job-1"))
    await wait_for(lambda: spool.failed == 1, what="a failed write")
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    await h.deliverer.persist()  # still full: nothing on disk, counted as such
    assert spool.failed == 2
    assert h.deliverer.unwritten_results() == 1
    assert "database or disk is full" in str(h.deliverer.spool_failure)
    spool.full = False
    await h.deliverer.persist()
    assert [o.job_id for o in spool.pending()] == ["job-1"]
    assert h.deliverer.unwritten_results() == 0
    h.task = run
    await h.__aexit__()


async def test_a_result_refused_after_it_was_spooled_is_told_again_as_its_failure(
    tmp_path: Path,
) -> None:
    # On disk first (its job may log "completed"), then refused as too large:
    # whoever logs the job hears of the failure that replaced it.
    told: list[Outcome] = []

    def refuse_once_on_disk(request: Received) -> Reply:
        if len(request.body) > 4000:
            with contextlib.closing(sqlite3.connect(tmp_path / "spool.sqlite3")) as spooled:
                (rows,) = spooled.execute("SELECT COUNT(*) FROM outcomes").fetchone()
            if not rows:
                return DROP  # not on disk yet: the node sends it again
            return Reply(413, {"error": {"message": "too big", "type": "invalid_request_error"}})
        return accept_all(request)

    async with Harness(tmp_path) as h:
        h.server.respond = refuse_once_on_disk
        durable = h.deliverer.put(big_result("job-1"), told.append)
        assert await h.deliverer.wait_idle(10)
        assert durable.done()
    assert [type(outcome).__name__ for outcome in told] == ["ResultOutcome", "ErrorOutcome"]
    failure = told[1]
    assert isinstance(failure, ErrorOutcome) and failure.error.type == "result_too_large"
    assert h.server.bodies(SUBMIT)[-1]["outcomes"][0]["kind"] == "error"


async def test_a_result_refused_before_it_was_durable_is_told_only_as_its_failure(
    tmp_path: Path,
) -> None:
    told: list[Outcome] = []

    def limit_bodies(request: Received) -> Reply:
        if len(request.body) > 4000:
            return Reply(413, {"error": {"message": "too big", "type": "invalid_request_error"}})
        return accept_all(request)

    async with Harness(tmp_path, spool_after=3600) as h:  # never on disk before the ack
        h.server.respond = limit_bodies
        h.deliverer.put(big_result("job-1"), told.append)
        assert await h.deliverer.wait_idle(10)
    assert len(told) == 1
    assert isinstance(told[0], ErrorOutcome) and told[0].error.type == "result_too_large"


async def test_a_full_disk_is_tried_at_its_period_and_logged_once_per_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Server down and disk full: each failed submit (every backoff step) and
    # each new result used to try the disk again, and log it again.
    monkeypatch.setattr(delivery, "SPOOL_RETRY_SECONDS", 3600, raising=False)
    spool = FullSpool(tmp_path / "full.sqlite3")
    async with Harness(tmp_path, spool=spool, backoff=Backoff(0.01, 0.02)) as h:
        h.server.respond = always(DROP)
        with caplog.at_level(logging.DEBUG, logger="openbeepboop_node"):
            h.deliverer.put(error("job-1"))
            await wait_for(lambda: spool.failed == 1, what="a failed write")
            sent = len(h.server.received)
            await wait_for(lambda: len(h.server.received) >= sent + 10, what="failed submits")
            h.deliverer.put(error("job-2"))
            await wait_for(lambda: len(h.server.received) >= sent + 20, what="failed submits")
        assert spool.failed == 1  # not before the retry period is over
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert "database or disk is full" in errors[0].getMessage()
        assert "tried every 3600 s" in errors[0].getMessage()


async def test_a_spool_that_takes_writes_again_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(delivery, "SPOOL_RETRY_SECONDS", 0.05, raising=False)
    spool = FullSpool(tmp_path / "full.sqlite3")
    async with Harness(tmp_path, spool=spool, spool_after=0.05) as h:
        h.server.respond = hold_submits
        with caplog.at_level(logging.WARNING, logger="openbeepboop_node"):
            durable = h.deliverer.put(error("job-1"))
            await wait_for(lambda: spool.failed >= 3, what="retried writes")
            spool.full = False
            await asyncio.wait_for(durable, 10)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    back = [r.getMessage() for r in caplog.records if "takes writes again" in r.getMessage()]
    assert len(errors) == 1, errors
    assert len(back) == 1, back
