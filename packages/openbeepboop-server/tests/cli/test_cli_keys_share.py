"""``keys create --weight --max-priority``, ``keys update`` and the columns ``keys list`` adds."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result
from openbeepboop_server.cli import main


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(config)])


def listed(config: Path) -> dict[str, dict[str, object]]:
    result = run(config, "keys", "list", "--json")
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in map(json.loads, result.stdout.splitlines())}


def test_create_with_a_weight_and_a_ceiling_then_update_them(config: Path) -> None:
    made = run(config, "keys", "create", "--role", "USER", "--name", "big", "--weight", "3",
               "--max-priority", "5")  # fmt: skip
    assert made.exit_code == 0, made.output
    plain = run(config, "keys", "create", "--role", "USER", "--name", "plain")
    assert plain.exit_code == 0, plain.output
    rows = listed(config)
    assert (rows["big"]["weight"], rows["big"]["max_priority"]) == (3, 5)
    assert (rows["plain"]["weight"], rows["plain"]["max_priority"]) == (1, 0)
    updated = run(config, "keys", "update", "plain", "--max-priority", "-2")
    assert updated.exit_code == 0, updated.output
    assert updated.stdout.strip() == (
        "Updated key 'plain': weight 1, max priority -2, limits -, expires never."
    )
    assert run(config, "keys", "update", "plain", "--weight", "7").exit_code == 0
    assert (listed(config)["plain"]["weight"], listed(config)["plain"]["max_priority"]) == (7, -2)
    table = run(config, "keys", "list").stdout
    assert "WEIGHT" in table and "MAX PRIORITY" in table


def test_bad_values_are_one_line_and_change_nothing(config: Path) -> None:
    assert run(config, "keys", "create", "--role", "USER", "--name", "u").exit_code == 0
    for args in (
        ("keys", "update", "u", "--weight", "0"),
        ("keys", "update", "u", "--max-priority", "1001"),
        ("keys", "update", "u"),
        ("keys", "update", "nobody", "--weight", "2"),
        ("keys", "create", "--role", "USER", "--name", "v", "--weight", "x"),
    ):
        result = run(config, *args)
        assert result.exit_code != 0, args
        assert "Traceback" not in result.output
        assert [line for line in result.stderr.splitlines() if line.startswith("Error")], args
    assert (listed(config)["u"]["weight"], listed(config)["u"]["max_priority"]) == (1, 0)
    assert "v" not in listed(config)
