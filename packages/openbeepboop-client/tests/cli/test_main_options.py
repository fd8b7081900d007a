"""The top-level group: -v/-q choose the verbosity once, before any command runs."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import pytest
from conftest import Cli
from openbeepboop import cli as cli_package

OWN_LOGGER = logging.getLogger("openbeepboop")


@pytest.mark.parametrize(
    ("flags", "verbosity"),
    [([], 0), (["-q"], -1), (["--quiet"], -1), (["-v"], 1), (["-vv"], 2), (["-vvv"], 2)],
)
def test_verbosity_is_chosen_by_the_group(
    flags: list[str], verbosity: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, object]] = []

    def record(chosen: int) -> None:
        seen.append((chosen, click.get_current_context().meta["verbosity"]))

    monkeypatch.setattr(cli_package, "configure_logging", record)
    result = Cli(tmp_path / "c.toml")(*flags, "models", "--help", config=False)
    assert result.exit_code == 0, result.stderr
    assert seen == [(verbosity, verbosity)]


def test_v_opens_our_loggers_and_the_default_does_not(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "c.toml")
    try:
        assert cli("-v", "models", "--help", config=False).exit_code == 0
        assert OWN_LOGGER.level == logging.DEBUG
        assert cli("models", "--help", config=False).exit_code == 0
        assert OWN_LOGGER.level == logging.NOTSET
    finally:
        OWN_LOGGER.setLevel(logging.NOTSET)


def test_help_lists_both_options(tmp_path: Path) -> None:
    result = Cli(tmp_path / "c.toml")("--help", config=False)
    assert "More logging (-vv: also third-party libraries)." in result.stdout
    assert "Only warnings and errors." in result.stdout
