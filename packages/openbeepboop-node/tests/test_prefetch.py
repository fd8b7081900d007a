"""How many leases wait for a slot: from the job-end rate and the fetch round trip."""

from __future__ import annotations

import pytest
from openbeepboop_node.prefetch import RATE_SECONDS, ROUND_TRIPS, PrefetchSizer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def steady(sizer: PrefetchSizer, clock: Clock, per_second: float, seconds: float) -> None:
    """Jobs ending evenly at ``per_second`` for ``seconds``."""
    for _ in range(int(per_second * seconds)):
        clock.now += 1 / per_second
        sizer.job_ended()


def test_one_lease_waits_before_anything_is_known() -> None:
    sizer = PrefetchSizer(limit=16, clock=Clock())
    assert sizer.target == 1
    assert sizer.fetch_now(waiting=0)
    assert not sizer.fetch_now(waiting=1)


def test_prefetch_off_holds_nothing_and_never_hurries_a_fetch() -> None:
    clock = Clock()
    sizer = PrefetchSizer(limit=0, clock=clock)
    sizer.round_trip(0.05)
    steady(sizer, clock, 200, 3)
    assert sizer.target == 0
    assert not sizer.fetch_now(waiting=0)


def test_a_busy_node_holds_what_two_round_trips_use_up() -> None:
    clock = Clock()
    sizer = PrefetchSizer(limit=64, clock=clock)
    for _ in range(ROUND_TRIPS):
        sizer.round_trip(0.03)
    steady(sizer, clock, 200, 5 * RATE_SECONDS)
    # 200 jobs/s x 30 ms = 6 per round trip; twice that wait.
    assert sizer.ending_per_second == pytest.approx(200, rel=0.02)
    assert sizer.target == 12
    assert sizer.fetch_now(waiting=5)
    assert not sizer.fetch_now(waiting=7)


def test_the_limit_caps_what_is_held() -> None:
    clock = Clock()
    sizer = PrefetchSizer(limit=4, clock=clock)
    sizer.round_trip(0.03)
    steady(sizer, clock, 200, 3)
    assert sizer.target == 4


def test_the_slowest_recent_round_trip_counts_and_old_ones_are_forgotten() -> None:
    clock = Clock()
    sizer = PrefetchSizer(limit=64, clock=clock)
    steady(sizer, clock, 100, 5 * RATE_SECONDS)
    sizer.round_trip(0.2)  # one slow answer...
    for _ in range(ROUND_TRIPS - 1):
        sizer.round_trip(0.01)
    assert sizer.target == 40  # 100/s x 0.2 s, twice
    sizer.round_trip(0.01)  # ...until it is out of the window
    assert sizer.target == 2


def test_slow_jobs_ending_together_are_not_mistaken_for_a_torrent() -> None:
    clock = Clock()
    sizer = PrefetchSizer(limit=16, clock=clock)
    sizer.round_trip(0.005)
    for _ in range(3):  # 16 jobs of 20 s, all ending in the same instant
        clock.now += 20
        for _ in range(16):
            sizer.job_ended()
    assert sizer.ending_per_second < 16 / RATE_SECONDS + 1e-9
    assert sizer.target == 1


def test_an_idle_node_forgets_its_old_pace() -> None:
    clock = Clock()
    sizer = PrefetchSizer(limit=64, clock=clock)
    sizer.round_trip(0.03)
    steady(sizer, clock, 200, 5)
    assert sizer.target == 12
    clock.now += 10 * RATE_SECONDS
    assert sizer.target == 1
