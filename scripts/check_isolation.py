"""Fail if installing node or client alone brought in the server's stack.

Run inside a venv that holds only the package under test:
``python scripts/check_isolation.py node starlette sqlalchemy alembic uvicorn``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys

IMPORTS = {
    "node": ["openbeepboop_node", "openbeepboop_node.cli"],
    "client": ["openbeepboop", "openbeepboop.cli"],
}


def main(part: str, forbidden: list[str]) -> int:
    installed = {dist.metadata["Name"].lower() for dist in importlib.metadata.distributions()}
    leaked = sorted(installed & set(forbidden))
    if leaked:
        print(f"openbeepboop-{part} installed {leaked}", file=sys.stderr)
        return 1
    # Import in a fresh interpreter and look at what got loaded, so even a
    # vendored or optional import of the server stack is caught.
    probe = (
        "import importlib, sys\n"
        f"for name in {IMPORTS[part]!r}: importlib.import_module(name)\n"
        f"if {part!r} == 'client':\n"
        "    from openbeepboop import Client, AsyncClient\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout.strip()
    if out != "[]":
        print(f"importing openbeepboop-{part} loaded {out}", file=sys.stderr)
        return 1
    print(f"openbeepboop-{part}: none of {forbidden} installed or imported")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2:]))
