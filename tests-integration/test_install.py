"""The README's install-from-a-checkout command, run as written into a fresh venv.

It runs under the machine's own ``python3`` (on Debian/Ubuntu a PEP 668
"externally managed" interpreter, where a bare ``pip install`` fails), so a
change that needs anything beyond Python itself fails here. The client role
is installed: the same script path as every role, and the quickest (the node's
LiteLLM or the server's stack would add a minute to CI for no other code).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Building two wheels and installing the client's dependencies on a loaded 2-core machine.
INSTALL_TIMEOUT_SECONDS = 600
#: The README line this test runs (the README-commands test checks the README says it).
INSTALL_COMMAND = "python3 scripts/install.py client --venv ~/obb-client"
#: Prints True where the script can run: Python >= 3.10 that can make a venv with pip.
PYTHON_CAN_INSTALL = "import sys, ensurepip, venv; print(sys.version_info >= (3, 10))"


def system_python() -> str:
    """The machine's own ``python3`` (>= 3.10, able to make a venv), as a user's shell finds it.

    Debian/Ubuntu split ``ensurepip`` into ``python3-venv``; without it there is
    no venv to install into, and the README says to install that first.
    """
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        path = Path(candidate)
        if path.exists():
            done = subprocess.run(
                [candidate, "-c", PYTHON_CAN_INSTALL],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.stdout.strip() == "True":
                return candidate
    return shutil.which("python3") or sys.executable


def test_readme_documents_the_tested_install_command() -> None:
    assert INSTALL_COMMAND in (ROOT / "README.md").read_text(encoding="utf-8")


def test_install_script_puts_the_client_alone_into_a_new_venv(tmp_path: Path) -> None:
    # The user's environment (pip's cache and index settings included), minus
    # this test session's venv and any OpenBeepBoop settings.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("OPENBEEPBOOP_") and key != "VIRTUAL_ENV"
    }
    argv = shlex.split(INSTALL_COMMAND)
    argv[0] = system_python()
    argv[-1] = str(tmp_path / "obb-client")  # what the shell makes of ~/obb-client
    done = subprocess.run(
        argv,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    bindir = tmp_path / "obb-client" / "bin"
    assert f"{bindir / 'openbeepboop-client'} --help" in done.stdout

    helped = subprocess.run(
        [str(bindir / "openbeepboop-client"), "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert helped.returncode == 0 and "submit" in helped.stdout, helped.stderr
    # Only the role asked for: no server, no node, none of the server's stack.
    for absent in ("openbeepboop-server", "openbeepboop-node"):
        assert not (bindir / absent).exists()
    listed = subprocess.run(
        [str(bindir / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    assert "openbeepboop-client==" in listed and "openbeepboop-schemas==" in listed
    for heavy in ("starlette", "sqlalchemy", "litellm"):
        assert f"{heavy}==" not in listed

    if argv[0] != sys.executable:
        # Nothing outside the venv changed: the interpreter's own packages lack the client.
        outside = subprocess.run(
            [argv[0], "-c", "import openbeepboop"], capture_output=True, text=True, check=False
        )
        assert outside.returncode != 0


def test_unknown_role_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [system_python(), "scripts/install.py", "gpu", "--venv", str(tmp_path / "v")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("install.py: error: unknown role 'gpu'")
    assert "Traceback" not in done.stderr and not (tmp_path / "v").exists()
