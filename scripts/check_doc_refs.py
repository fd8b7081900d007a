"""Every pointer from code or docs to a section of a document names one that exists.

Comments and docstrings point at documents as ``docs/NAME.md, "Section"`` (or
with single quotes). A section is a Markdown heading or a bold name (``**...**``)
in that document, or what stands before a colon in one. A pointer whose
document or section is missing fails the lint session, so renaming a heading
cannot silently strand the code that cites it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: ``docs/x.md, "A"`` possibly followed by ``and "B"`` / ``, "C"``, across wrapped comment lines.
POINTER = re.compile(r"""((?:docs|bench)/[\w.-]+\.md)((?:\s*(?:,|and)\s*(["'])[^"'\n]+\3)+)""")
NAME = re.compile(r"""(["'])([^"'\n]+)\1""")
HEADING = re.compile(r"^#+\s+(.*?)\s*$", re.M)
BOLD = re.compile(r"\*\*([^*]+)\*\*")


def sections(document: Path) -> set[str]:
    """Headings and bold names of one document, as written and without trailing dots."""
    text = document.read_text(encoding="utf-8")
    found = {*HEADING.findall(text), *BOLD.findall(text)}
    # "Hand-off: a submit claims ..." may be cited by what stands before its colon.
    return found | {name.rstrip(".:") for name in found} | {name.split(":")[0] for name in found}


def unwrap(text: str) -> str:
    """Comment markers and line breaks out of the way, so a wrapped pointer reads as one."""
    return re.sub(r"\s*\n\s*(?:#+\s*)?", " ", text)


def main() -> int:
    files = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    known: dict[str, set[str]] = {}
    broken: list[str] = []
    for name in files:
        if name == "scripts/check_doc_refs.py":  # its own examples
            continue
        text = unwrap((ROOT / name).read_text(encoding="utf-8"))
        for match in POINTER.finditer(text):
            document = ROOT / match.group(1)
            if not document.is_file():
                broken.append(f"{name}: {match.group(1)} does not exist")
                continue
            have = known.setdefault(match.group(1), sections(document))
            for _, section in NAME.findall(match.group(2)):
                if section not in have:
                    broken.append(f"{name}: {match.group(1)} has no section {section!r}")
    for line in broken:
        print(line, file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
