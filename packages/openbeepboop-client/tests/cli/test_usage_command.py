"""usage: the table, --json, the window flags, and another key's usage in one line."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import respx
from conftest import Cli, assert_one_line_error, error_body
from openbeepboop import Client

REPORT = {
    "object": "usage",
    "since": None,
    "until": None,
    "data": [
        {
            "key": "alice",
            "completed": 6,
            "failed": 1,
            "cancelled": 2,
            "prompt_tokens": 120,
            "completion_tokens": 45,
            "total_tokens": 165,
            "llm_seconds": 12.25,
        }
    ],
}


def test_usage_prints_a_table(server: respx.MockRouter, cli: Cli) -> None:
    server.get("/v1/usage").respond(200, json=REPORT)
    result = cli("usage")
    assert result.exit_code == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("alice"))
    assert row.split() == ["alice", "6", "1", "2", "120", "45", "12.2"]


def test_usage_json_and_window(server: respx.MockRouter, cli: Cli) -> None:
    route = server.get("/v1/usage").respond(200, json=REPORT)
    result = cli("usage", "--json", "--key", "alice", "--since", "2027-01-31", "--until", "1h")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["data"][0]["prompt_tokens"] == 120
    params = route.calls.last.request.url.params
    assert params["key"] == "alice"
    assert params["since"] == "2027-01-31T00:00:00+00:00"
    assert datetime.fromisoformat(params["until"]).tzinfo is not None


def test_usage_of_another_key_is_one_line(server: respx.MockRouter, cli: Cli) -> None:
    server.get("/v1/usage").respond(
        403, json=error_body("a USER key may read only its own usage", "permission_error")
    )
    assert_one_line_error(cli("usage", "--key", "bob"), "only its own usage")


def test_usage_with_a_bad_window_is_one_line(cli: Cli) -> None:
    result = cli("usage", "--since", "yesterday-ish")
    assert result.exit_code != 0 and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("since", "sent"),
    [
        (datetime(2027, 1, 31, 12, tzinfo=timezone.utc), "2027-01-31T12:00:00+00:00"),
        (datetime(2027, 1, 31, 12), "2027-01-31T12:00:00+00:00"),
        (1_800_000_000, "1800000000.0"),
    ],
)
def test_the_library_sends_the_window(
    server: respx.MockRouter, client: Client, since: object, sent: str
) -> None:
    route = server.get("/v1/usage").respond(200, json=REPORT)
    report = client.usage.retrieve(since=since)  # type: ignore[arg-type]
    assert report.data[0].total_tokens == 165
    assert route.calls.last.request.url.params["since"] == sent
