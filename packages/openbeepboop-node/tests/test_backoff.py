"""Backoff grows with jitter and a cap; an outage is logged once each way."""

from __future__ import annotations

import logging
import random

import pytest
from openbeepboop_node.backoff import Backoff, Connectivity


def test_delays_grow_exponentially_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.5, 1, 2, 4, 8, 8, 8, 8]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered, not in lock step
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_retry_after_hint_is_honoured_within_the_cap() -> None:
    backoff = Backoff(0.5, 10.0, rng=random.Random(1))
    assert backoff.next_delay(hint=5.0) >= 5.0
    assert backoff.next_delay(hint=100.0) <= 10.0


def test_outage_logged_once_and_recovery_once(caplog: pytest.LogCaptureFixture) -> None:
    connectivity = Connectivity("http://q")
    with caplog.at_level(logging.INFO, logger="openbeepboop_node"):
        connectivity.succeeded()
        for _ in range(5):
            connectivity.failed("refused")
        assert connectivity.down
        connectivity.succeeded()
        connectivity.succeeded()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "unreachable (refused)" in messages[0]
    assert "reachable again" in messages[1]
    assert not connectivity.down
