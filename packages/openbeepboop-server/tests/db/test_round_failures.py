"""A background loop logs a database outage once, not a traceback every round; a bug every time."""

from __future__ import annotations

import logging
import sqlite3

import pytest
import sqlalchemy as sa
from openbeepboop_server.db.faults import RoundFailures

LOGGER = "tests.round_failures"


def locked() -> sa.exc.OperationalError:
    """What SQLAlchemy raises when another process holds SQLite's lock past the busy timeout."""
    return sa.exc.OperationalError(
        "UPDATE jobs ...", {}, sqlite3.OperationalError("database is locked")
    )


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, bool]]:
    return [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records]


def test_an_outage_is_one_line_then_silence_then_one_line_when_it_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    rounds = RoundFailures(logging.getLogger(LOGGER), "expiring leases")
    rounds.succeeded()
    for _ in range(50):
        rounds.failed(locked())
    rounds.succeeded()
    rounds.succeeded()
    rounds.failed(locked())  # a second outage is told again
    assert lines(caplog) == [
        (
            logging.WARNING,
            "expiring leases: the database is unavailable (OperationalError: database is "
            "locked); retrying until it answers",
            False,
        ),
        (logging.INFO, "expiring leases: the database answers again", False),
        (
            logging.WARNING,
            "expiring leases: the database is unavailable (OperationalError: database is "
            "locked); retrying until it answers",
            False,
        ),
    ]


def test_a_bug_is_logged_with_its_traceback_every_round(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    rounds = RoundFailures(logging.getLogger(LOGGER), "driving batches")
    for _ in range(3):
        try:
            raise KeyError("a bug")
        except KeyError as exc:
            rounds.failed(exc)
    assert (
        lines(caplog) == [(logging.ERROR, "driving batches failed; retrying next time", True)] * 3
    )
    assert "KeyError: 'a bug'" in caplog.text
