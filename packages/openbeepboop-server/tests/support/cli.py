"""What every CLI test checks of a refusal: one ``Error:`` line on stderr, exit 1, no traceback."""

from __future__ import annotations

from click.testing import Result


def one_error_line(result: Result) -> str:
    """The one error line ``result`` printed (asserting that it is exactly that)."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]
