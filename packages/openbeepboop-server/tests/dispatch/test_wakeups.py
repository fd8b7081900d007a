"""The wake-up registry on its own: who is woken, how many, and that nothing leaks."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from openbeepboop_server.dispatch.wakeups import Waiter, Wakeups


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_new_jobs_wake_as_many_matching_fetchers_oldest_first() -> None:
    wakeups = Wakeups()
    with (
        wakeups.fetching(["a"]) as first,
        wakeups.fetching(["b"]) as other_model,
        wakeups.fetching(["a", "c"]) as second,
        wakeups.fetching(["*"]) as anything,
    ):
        wakeups.jobs_available(["a"])
        assert (first.woken, other_model.woken, second.woken, anything.woken) == (
            True,
            False,
            False,
            False,
        )
        wakeups.jobs_available(["a", "a"])
        # first is already woken (it will claim anyway): the next two take the turn.
        assert (second.woken, anything.woken, other_model.woken) == (True, True, False)
    assert wakeups.fetch_waiters == 0


def test_any_model_waiter_takes_any_job() -> None:
    wakeups = Wakeups()
    with wakeups.fetching(["*"]) as anything:
        wakeups.jobs_available(["whatever"])
        assert anything.woken


def test_a_woken_fetcher_that_leaves_passes_the_turn_on() -> None:
    wakeups = Wakeups()
    with contextlib.ExitStack() as first_block:
        woken = first_block.enter_context(wakeups.fetching(["m"]))
        with wakeups.fetching(["m"]) as next_in_line:
            wakeups.jobs_available(["m"])
            assert woken.woken and not next_in_line.woken
            first_block.close()  # leaves without claiming (client gone, deadline)
            assert next_in_line.woken


def test_a_fetcher_that_claimed_does_not_pass_a_turn_on() -> None:
    wakeups = Wakeups()
    with contextlib.ExitStack() as first_block:
        woken = first_block.enter_context(wakeups.fetching(["m"]))
        with wakeups.fetching(["m"]) as other:
            wakeups.jobs_available(["m"])
            woken.clear()  # what the fetch loop does right before claiming
            first_block.close()
            assert not other.woken


def test_queue_changed_wakes_every_fetcher() -> None:
    wakeups = Wakeups()
    with wakeups.fetching(["a"]) as a, wakeups.fetching(["b"]) as b:
        wakeups.queue_changed()
        assert a.woken and b.woken


def test_job_changes_wake_only_their_watchers() -> None:
    wakeups = Wakeups()
    with wakeups.watching(["j1", "j2"]) as both, wakeups.watching(["j3"]) as other:
        wakeups.jobs_changed(["j2"])
        assert both.woken and not other.woken
        assert wakeups.watch_waiters == 2
    assert wakeups.watch_waiters == 0
    # The per-id index is emptied too.
    wakeups.jobs_changed(["j1", "j2", "j3"])
    assert not wakeups._watchers


def test_lease_watches_wake_on_job_changes_but_stay_apart_from_polls() -> None:
    wakeups = Wakeups()
    with (
        wakeups.watching_leases(["j1", "j2"]) as lease_watch,
        wakeups.watching(["j2"]) as poll,
    ):
        # A delivery reads results only for polls, never for a node's lease watch.
        assert wakeups.watched(["j1", "j2"]) == ["j2"]
        # The periodic re-check asks about both.
        assert sorted(wakeups.watched_ids()) == ["j1", "j2"]
        assert (wakeups.lease_watch_waiters, wakeups.watch_waiters) == (1, 1)
        wakeups.jobs_changed(["j1"])
        assert (lease_watch.woken, poll.woken) == (True, False)
        lease_watch.clear()
        wakeups.narrow_leases(lease_watch, ["j2"])
        wakeups.jobs_changed(["j1"])
        assert not lease_watch.woken
        assert wakeups.watched_ids() == ["j2"]
        wakeups.close()
        assert lease_watch.closed and lease_watch.woken
    assert (wakeups.lease_watch_waiters, wakeups.watched_ids()) == (0, [])


def test_close_wakes_and_marks_everyone() -> None:
    wakeups = Wakeups()
    with wakeups.fetching(["a"]) as fetcher, wakeups.watching(["j"]) as watcher:
        wakeups.close()
        assert fetcher.woken and fetcher.done
        assert watcher.woken and watcher.done
    with wakeups.fetching(["a"]) as late:
        assert late.done


@pytest.mark.anyio
async def test_wait_returns_on_wake_and_times_out_otherwise() -> None:
    wakeups = Wakeups()
    with wakeups.fetching(["a"]) as waiter:
        assert await waiter.wait(0.01) is False
        asyncio.get_running_loop().call_later(0.01, wakeups.jobs_available, ["a"])
        assert await waiter.wait(30) is True
        assert await waiter.wait(0) is True  # still set until cleared
        waiter.clear()
        assert await waiter.wait(0) is False


@pytest.mark.anyio
async def test_a_woken_wait_resumes_in_the_next_turn_of_the_loop() -> None:
    # Every turn of the loop between a wake-up and the long-poll's answer is
    # latency on the way to the node or the user (and lets other work cut in).
    wakeups = Wakeups()
    with wakeups.watching(["j"]) as waiter:
        waiting = asyncio.ensure_future(waiter.wait(30))
        await asyncio.sleep(0)  # now asleep in its wait
        wakeups.jobs_changed(["j"])
        await asyncio.sleep(0)  # one turn
        assert waiting.done() and waiting.result() is True


@pytest.mark.anyio
async def test_waits_in_progress_are_all_woken_and_leave_nothing_behind() -> None:
    wakeups = Wakeups()
    with wakeups.watching(["j"]) as waiter:
        both = asyncio.gather(waiter.wait(30), waiter.wait(30))
        await asyncio.sleep(0)
        waiter.wake()
        assert await both == [True, True]
        assert not waiter._sleeping  # no future kept once woken
        late = asyncio.ensure_future(waiter.wait(30))
        await asyncio.sleep(0)
        late.cancel()  # the client's request was cancelled mid-wait
        with contextlib.suppress(asyncio.CancelledError):
            await late
        assert not waiter._sleeping


@pytest.mark.anyio
async def test_disconnect_wakes_and_marks_done() -> None:
    wakeups = Wakeups()
    with wakeups.watching(["j"]) as waiter:
        asyncio.get_running_loop().call_later(0.01, waiter.disconnect)
        assert await waiter.wait(30) is True
        assert waiter.done


@pytest.mark.anyio
async def test_reserve_picks_the_longest_parked_fetcher_that_serves_the_model() -> None:
    wakeups = Wakeups()
    with (
        wakeups.fetching(["m"], "busy") as busy,
        wakeups.fetching(["other"], "other") as other,
        wakeups.fetching(["m"]) as anonymous,
        wakeups.fetching(["*"], "first") as first,
        wakeups.fetching(["m"], "second") as second,
    ):
        for waiter in (other, anonymous, first, second):
            waiter.parked = True  # busy is still claiming: not parked
        assert wakeups.parked_fetch_waiters == 4
        assert wakeups.reserve("m") is first
        assert first.reserved and first.woken
        assert wakeups.reserve("m") is second
        assert wakeups.reserve("m") is None  # busy is not parked, anonymous has no claimant
        assert not (busy.reserved or other.reserved or anonymous.reserved)


@pytest.mark.anyio
async def test_a_hand_off_reaches_a_waiter_until_it_leaves() -> None:
    wakeups = Wakeups()
    with wakeups.fetching(["m"], "node") as waiter:
        waiter.parked = True
        assert wakeups.reserve("m") is waiter
        assert waiter.hand(["lease"]) is True
        assert await waiter.handed() == ["lease"]
        assert not waiter.reserved and not waiter.woken  # nothing left to pass on
        assert waiter.hand(["again"]) is False  # not reserved any more
        assert wakeups.reserve("m") is waiter
    assert waiter.hand(["late"]) is False  # it left: the caller must give the lease back


@pytest.mark.anyio
async def test_nothing_is_reserved_once_closing() -> None:
    wakeups = Wakeups()
    with wakeups.fetching(["m"], "node") as waiter:
        waiter.parked = True
        wakeups.close()
        assert wakeups.reserve("m") is None


@pytest.mark.anyio
async def test_a_submit_learns_whether_its_leases_were_taken() -> None:
    wakeups = Wakeups()
    with wakeups.fetching(["m"], "node") as waiter:
        waiter.parked = True
        wakeups.reserve("m")
        assert waiter.hand(["lease"])
        assert await waiter.handed() == ["lease"]
        assert await waiter.taken() is True
    with wakeups.fetching(["m"], "node") as leaving:
        leaving.parked = True
        wakeups.reserve("m")
        assert leaving.hand(["lease"])  # handed, but the fetch ends before taking it
    assert await leaving.taken() is False  # so the submit gives the lease back


@pytest.mark.anyio
async def test_a_submit_looks_only_at_the_fetchers_that_serve_its_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Many parked fetchers declaring many other names must not make a submit's
    # hand-off or wake-up cost more: it walks only the waiters of its model.
    looked: list[int] = []
    woken = Waiter.woken

    def counting(self: Waiter) -> bool:
        looked.append(1)
        return bool(woken.fget(self))  # type: ignore[attr-defined]

    wakeups = Wakeups()
    with contextlib.ExitStack() as stack:
        others = [
            stack.enter_context(wakeups.fetching([f"x{i}-{j}" for j in range(50)], "node"))
            for i in range(500)
        ]
        mine = stack.enter_context(wakeups.fetching(["m"], "node"))
        spare = stack.enter_context(wakeups.fetching(["m"], "node"))
        for waiter in [*others, mine, spare]:
            waiter.parked = True
        assert wakeups.parked_demand()["m"] == 2
        assert len(wakeups.parked_demand()) == 500 * 50 + 1
        monkeypatch.setattr(Waiter, "woken", property(counting))
        assert wakeups.reserve("m") is mine
        wakeups.jobs_available(["m"])
        assert spare.woken
        assert len(looked) < 10
        assert not any(waiter.woken for waiter in others)
