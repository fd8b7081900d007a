"""Who sees which job: USER keys their own, ADMIN all; get, poll, list, cancel."""

from __future__ import annotations

import pytest
from openbeepboop_schemas import NOT_FOUND, JobStatus
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue.service import QueueService
from openbeepboop_server.queue.views import CursorError

from tests.support.core import FakeClock, chat_request


def test_a_user_sees_only_their_own_jobs(queue: QueueService, alice: Caller, bob: Caller) -> None:
    mine = queue.submit(alice, chat_request())
    theirs = queue.submit(bob, chat_request())
    assert queue.get(alice, mine.id) is not None
    assert queue.get(alice, theirs.id) is None
    assert queue.get(alice, "job-doesnotexist") is None
    entries = queue.poll(alice, [theirs.id, mine.id, "job-doesnotexist"])
    assert [e.status for e in entries] == [NOT_FOUND, "QUEUED", NOT_FOUND]
    assert [e.id for e in entries] == [theirs.id, mine.id, "job-doesnotexist"]
    # Another's job and a job that never existed answer identically.
    assert entries[0].model_dump(exclude={"id"}) == entries[2].model_dump(exclude={"id"})


def test_a_user_cannot_cancel_anothers_job(queue: QueueService, alice: Caller, bob: Caller) -> None:
    theirs = queue.submit(bob, chat_request())
    assert queue.cancel(alice, theirs.id) is None
    assert queue.get(bob, theirs.id).status == "QUEUED"  # type: ignore[union-attr]


def test_admin_sees_and_cancels_everything(
    queue: QueueService, alice: Caller, admin: Caller
) -> None:
    job = queue.submit(alice, chat_request())
    assert queue.get(admin, job.id) is not None
    assert queue.poll(admin, [job.id])[0].status == "QUEUED"
    assert queue.cancel(admin, job.id).status == "CANCELLED"  # type: ignore[union-attr]
    assert [e.id for e in queue.list_jobs(admin).data] == [job.id]


def test_poll_keeps_order_and_repeats(queue: QueueService, alice: Caller) -> None:
    a, b = queue.submit_many(alice, [chat_request(), chat_request()])
    entries = queue.poll(alice, [b.id, a.id, b.id])
    assert [e.id for e in entries] == [b.id, a.id, b.id]


def test_poll_entry_of_a_queued_job(queue: QueueService, alice: Caller, clock: FakeClock) -> None:
    job = queue.submit(alice, chat_request(model="m1"))
    entry = queue.poll(alice, [job.id])[0]
    assert entry.status == "QUEUED"
    assert entry.completed is False
    assert entry.model == "m1"
    assert entry.result is None and entry.error is None
    assert entry.attempts == 0
    assert entry.created_at == int(clock.now)
    assert entry.started_at is None and entry.completed_at is None


def test_list_is_newest_first_paged_and_only_the_callers(
    queue: QueueService, alice: Caller, bob: Caller, clock: FakeClock
) -> None:
    created = []
    for i in range(5):
        created.append(queue.submit(alice, chat_request(content=str(i))).id)
        queue.submit(bob, chat_request())
        clock.advance(1)
    newest_first = list(reversed(created))
    page = queue.list_jobs(alice, limit=2)
    assert [e.id for e in page.data] == newest_first[:2]
    assert page.has_more and page.next_after == newest_first[1]
    page = queue.list_jobs(alice, limit=2, after=page.next_after)
    assert [e.id for e in page.data] == newest_first[2:4]
    page = queue.list_jobs(alice, limit=2, after=page.next_after)
    assert [e.id for e in page.data] == newest_first[4:]
    assert not page.has_more and page.next_after is None


def test_list_filters_by_status(queue: QueueService, alice: Caller) -> None:
    a, b, c = queue.submit_many(alice, [chat_request()] * 3)
    queue.cancel(alice, b.id)
    cancelled = queue.list_jobs(alice, status=JobStatus.CANCELLED)
    assert [e.id for e in cancelled.data] == [b.id]
    queued = queue.list_jobs(alice, status=JobStatus.QUEUED)
    assert [e.id for e in queued.data] == [c.id, a.id]


def test_list_after_another_keys_job_goes_on_with_the_callers_older_jobs(
    queue: QueueService, alice: Caller, bob: Caller
) -> None:
    # Another key's job id says where it was as much as its time prefix does,
    # and a missing id would be answered the same way: no existence is told.
    older = queue.submit(alice, chat_request())
    theirs = queue.submit(bob, chat_request())
    queue.submit(alice, chat_request())
    page = queue.list_jobs(alice, after=theirs.id)
    assert [e.id for e in page.data] == [older.id] and not page.has_more
    with pytest.raises(CursorError):
        queue.list_jobs(alice, after="job-unknown")


@pytest.mark.parametrize("limit", [0, -5])
def test_list_limit_is_clamped(queue: QueueService, alice: Caller, limit: int) -> None:
    queue.submit_many(alice, [chat_request()] * 3)
    assert len(queue.list_jobs(alice, limit=limit).data) == 1
