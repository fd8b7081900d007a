"""The policy of several server URLs: stick, fail over in order, come back to the first."""

from __future__ import annotations

import pytest
from openbeepboop_node.server_pool import ServerPool, split_urls

A, B, C = "http://a:8000", "http://b:8000", "http://c:8000"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_split_urls_takes_commas_lists_and_blanks() -> None:
    assert split_urls(f"{A}, {B},,") == [A, B]
    assert split_urls([A, f"{B},{C}"]) == [A, B, C]
    assert split_urls("") == []


def test_a_pool_needs_a_url() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ServerPool([])


def test_calls_stick_to_the_first_url_while_it_answers() -> None:
    pool = ServerPool([A, B, C])
    assert pool.order() == [A, B, C]
    pool.succeeded(A)
    assert pool.order() == [A, B, C]
    assert pool.current == A


def test_a_failure_moves_to_the_next_url_and_stays_there() -> None:
    pool = ServerPool([A + "/", B, C])  # a trailing slash is dropped
    pool.failed(A, "refused")
    assert pool.current == B
    assert pool.order() == [B, C, A]
    pool.succeeded(B)
    assert pool.order() == [B, C, A]


def test_a_failure_on_a_url_already_left_moves_nothing() -> None:
    # Two calls in flight on A both fail: the second must not push B away.
    pool = ServerPool([A, B, C])
    pool.failed(A, "refused")
    pool.failed(A, "refused")
    assert pool.current == B


def test_every_url_failing_wraps_around_to_the_first() -> None:
    clock = Clock()
    pool = ServerPool([A, B], clock=clock)
    pool.failed(A, "x")
    pool.failed(B, "x")
    assert pool.current == A
    clock.now += 10_000  # no failback is pending: A is already in use
    assert pool.order() == [A, B]


def test_the_first_url_is_tried_again_after_failback_seconds() -> None:
    clock = Clock()
    pool = ServerPool([A, B, C], failback=60, clock=clock)
    pool.failed(A, "refused")
    pool.failed(B, "refused")  # moving on from B keeps A's clock running
    assert pool.current == C
    clock.now += 59
    assert pool.order()[0] == C
    clock.now += 1
    assert pool.order() == [A, B, C]
    # A still down: the next call moves on at once, and the clock starts again.
    pool.failed(A, "refused")
    assert pool.current == B
    clock.now += 59
    assert pool.order()[0] == B
    clock.now += 1
    assert pool.order()[0] == A


def test_one_url_never_moves() -> None:
    pool = ServerPool([A])
    pool.failed(A, "refused")
    assert pool.order() == [A]
    assert pool.label() == A


def test_an_outage_is_logged_once_per_url(caplog: pytest.LogCaptureFixture) -> None:
    pool = ServerPool([A, B])
    for _ in range(3):
        pool.failed(A, "refused")
        pool.failed(B, "refused")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"queue server {A} unreachable (refused); moving to {B}",
        f"queue server {B} unreachable (refused); moving to {A}",
    ]
    pool.succeeded(A)
    pool.failed(A, "reset")
    assert "unreachable (reset)" in caplog.records[-1].getMessage()
