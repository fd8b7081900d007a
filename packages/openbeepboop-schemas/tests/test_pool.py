"""The pool status model (tolerant, bounded lists counted) and its one text rendering."""

from __future__ import annotations

import pytest
from openbeepboop_schemas import (
    ModelStatus,
    NodeStatus,
    PoolStatus,
    RecentFailure,
    WindowCounts,
    format_pool_status,
)
from openbeepboop_schemas.pool import format_duration, format_rate


def _status(**fields: object) -> PoolStatus:
    return PoolStatus.model_validate(
        {"generated_at": 1_000.0, "window_seconds": 300.0, "node_seen_seconds": 900.0, **fields}
    )


def test_defaults_are_an_empty_pool_and_unknown_fields_are_kept() -> None:
    status = _status(brand_new=1)
    assert (status.queued, status.models, status.nodes, status.window.error_rate) == (
        0,
        [],
        [],
        None,
    )
    assert status.model_dump()["brand_new"] == 1
    # Defaults are not shared between instances.
    status.models.append(ModelStatus(model="x"))
    assert _status().models == []


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (-3, "0s"),
        (59.9, "59s"),
        (119, "119s"),
        (120, "2m"),
        (7200, "2h"),
        (2 * 86400, "2d"),
    ],
)
def test_durations(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_rates() -> None:
    assert format_rate(None) == "-"
    assert format_rate(0.0909) == "9.1%"


def test_text_shows_every_table_and_says_what_was_left_out() -> None:
    status = _status(
        queued=5,
        processing=1,
        oldest_queued_seconds=130,
        window=WindowCounts(completed=12, failed=4, completed_per_minute=2.4, error_rate=0.25),
        models=[
            ModelStatus(model="llama3", queued=5, processing=1, oldest_queued_seconds=130, nodes=2)
        ],
        models_total=3,
        nodes=[
            NodeStatus(
                node_id="n1",
                key_name="k",
                models=["llama3", "*"],
                last_seen=990,
                seen_seconds_ago=10,
            )
        ],
        nodes_online=1,
        recent_failures=[
            RecentFailure(
                job_id="job-1", model="llama3", error_message="bad\nthing", failed_at=700.0
            )
        ],
    )
    text = format_pool_status(status)
    assert "Queued: 5 (oldest waiting 2m)   In flight: 1   Nodes online: 1" in text
    assert "Last 5m: 12 completed (2.4/min), 4 failed, 0 cancelled, error rate 25.0%" in text
    assert "... and 2 more models" in text
    node_line = next(line for line in text.splitlines() if line.startswith("n1 "))
    assert node_line.split() == ["n1", "k", "-", "llama3,*", "0", "10s", "ago"]
    failure_line = next(line for line in text.splitlines() if line.startswith("job-1 "))
    assert failure_line.split() == ["job-1", "llama3", "-", "5m", "ago", "bad", "thing"]


def test_text_of_an_empty_pool() -> None:
    text = format_pool_status(_status())
    assert "No models: no jobs and no nodes." in text
    assert "No node seen in the last 15m." in text
    assert "Recent failures" not in text
