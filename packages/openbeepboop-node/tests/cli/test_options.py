"""``-v/-q`` belong to the top-level group and set up logging once for any command."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from openbeepboop_node.cli import main
from openbeepboop_node.cli.options import NOISY_LOGGERS, verbosity


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    names = ("openbeepboop_node", *NOISY_LOGGERS)
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level for n in names}
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize(
    ("flags", "ours", "others", "litellm"),
    [
        ([], logging.INFO, logging.INFO, logging.WARNING),
        (["-q"], logging.WARNING, logging.WARNING, logging.WARNING),
        (["-v"], logging.DEBUG, logging.INFO, logging.WARNING),
        (["-vv"], logging.DEBUG, logging.DEBUG, logging.DEBUG),
        (["--verbose", "--verbose", "--verbose"], logging.DEBUG, logging.DEBUG, logging.DEBUG),
    ],
)
def test_verbosity_flags_go_before_the_command(
    flags: list[str], ours: int, others: int, litellm: int
) -> None:
    result = CliRunner().invoke(main, [*flags, "run", "--help"])
    assert result.exit_code == 0, result.output
    assert logging.getLogger("openbeepboop_node.running").getEffectiveLevel() == ours
    assert logging.getLogger("some.library").getEffectiveLevel() == others
    assert logging.getLogger("LiteLLM").getEffectiveLevel() == litellm


def test_quiet_wins_over_verbose() -> None:
    assert [verbosity(0, False), verbosity(1, False), verbosity(5, False)] == [0, 1, 2]
    assert verbosity(2, True) == -1


@pytest.mark.parametrize("command", ["run", "batch"])
def test_the_commands_no_longer_take_verbosity_flags(command: str) -> None:
    result = CliRunner().invoke(main, [command, "-q"])
    assert result.exit_code == 2
    assert "No such option" in result.stderr and "-q" in result.stderr


def test_the_group_help_names_the_verbosity_flags() -> None:
    out = CliRunner().invoke(main, ["--help"]).output
    assert "More logging (-vv: also third-party libraries)." in out
    assert "Only warnings and errors." in out
