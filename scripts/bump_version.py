"""Set one version on all five distributions and their exact sibling pins.

python scripts/bump_version.py 0.2.0    # bump
python scripts/bump_version.py --check  # fail if they disagree (lint runs this)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PACKAGES = Path(__file__).resolve().parent.parent / "packages"
VERSION_LINE = re.compile(r'^version = "([^"]+)"$', re.MULTILINE)
SIBLING_PIN = re.compile(r'"(openbeepboop(?:-[a-z]+)?)==([^"]+)"')


def pyprojects() -> list[Path]:
    """Every distribution's pyproject.toml."""
    return sorted(PACKAGES.glob("*/pyproject.toml"))


def versions_found() -> set[str]:
    """Each version and sibling pin written anywhere."""
    found: set[str] = set()
    for path in pyprojects():
        text = path.read_text()
        found.update(VERSION_LINE.findall(text))
        found.update(pin for _, pin in SIBLING_PIN.findall(text))
    return found


def bump(new: str) -> None:
    """Rewrite every version line and sibling pin to ``new``."""
    for path in pyprojects():
        text = VERSION_LINE.sub(f'version = "{new}"', path.read_text())
        text = SIBLING_PIN.sub(lambda m: f'"{m.group(1)}=={new}"', text)
        path.write_text(text)


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        found = versions_found()
        if len(found) != 1:
            print(f"versions disagree: {sorted(found)}", file=sys.stderr)
            return 1
        print(f"all distributions at {found.pop()}")
        return 0
    if len(argv) != 1 or not re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*", argv[0]):
        print(__doc__, file=sys.stderr)
        return 2
    bump(argv[0])
    print(f"bumped {len(pyprojects())} distributions to {argv[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
