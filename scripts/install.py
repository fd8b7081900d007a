"""Install OpenBeepBoop from this checkout into a virtualenv, in one command.

    python3 scripts/install.py                      # everything, into ./.venv
    python3 scripts/install.py node                 # only a node
    python3 scripts/install.py client --venv ~/obb  # only the client, elsewhere
    python3 scripts/install.py "server[postgresql]" # the server, with PostgreSQL

Why a script: the five distributions are on no package index yet, and each
pins its siblings by exact version, so ``pip install ./packages/openbeepboop``
alone looks for the siblings on the index and fails. This script builds the
wheels a role needs (with the venv's own pip: no tool beyond Python itself)
and installs those wheel files together, so pip finds every sibling among
them and takes only third-party dependencies from the index.

Why a venv, always: a stock Debian/Ubuntu Python refuses ``pip install``
outside one (PEP 668, ``externally-managed-environment``), and anywhere else
it would change the user's global packages. The venv is created if missing
and reused if present; running the script again installs the checkout's
current code over what is there. Only the standard library is used, so it
runs on any Python >= 3.10 (README.md, "Install").
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import venv
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ROOT / "packages"
#: Role -> the distributions (folders under packages/) it installs; schemas always.
ROLES: dict[str, tuple[str, ...]] = {
    "all": (
        "openbeepboop-schemas",
        "openbeepboop-server",
        "openbeepboop-node",
        "openbeepboop-client",
        "openbeepboop",
    ),
    "server": ("openbeepboop-schemas", "openbeepboop-server"),
    "node": ("openbeepboop-schemas", "openbeepboop-node"),
    "client": ("openbeepboop-schemas", "openbeepboop-client"),
}
#: Which distribution of a role takes the extras written after it (``server[postgresql]``).
EXTRAS_TARGET = {
    "all": "openbeepboop-server",
    "server": "openbeepboop-server",
    "node": "openbeepboop-node",
    "client": "openbeepboop-client",
}
ROLE_SPEC = re.compile(r"^(?P<role>[a-z]+)(?:\[(?P<extras>[A-Za-z0-9_,\- ]+)\])?$")


class InstallError(Exception):
    """A step failed; the message is the one line the user sees."""


def say(text: str) -> None:
    """Progress for the person waiting."""
    print(text, flush=True)


def parse_roles(specs: Sequence[str]) -> dict[str, set[str]]:
    """Distribution -> extras to install, from ``ROLE`` / ``ROLE[extra,...]`` words."""
    wanted: dict[str, set[str]] = {}
    for spec in specs or ["all"]:
        match = ROLE_SPEC.match(spec.strip())
        if match is None or match["role"] not in ROLES:
            raise InstallError(
                f"unknown role {spec!r}: choose from {', '.join(ROLES)} "
                "(extras in brackets, e.g. server[postgresql])"
            )
        role = match["role"]
        for name in ROLES[role]:
            wanted.setdefault(name, set())
        if match["extras"]:
            extras = {e.strip() for e in match["extras"].split(",") if e.strip()}
            wanted[EXTRAS_TARGET[role]] |= extras
    return wanted


def venv_python(path: Path) -> Path:
    """The interpreter inside a venv (``bin/`` on POSIX, ``Scripts\\`` on Windows)."""
    if os.name == "nt":
        return path / "Scripts" / "python.exe"
    return path / "bin" / "python"


def ensure_venv(path: Path) -> Path:
    """Create the venv (with pip) unless it exists; its interpreter."""
    python = venv_python(path)
    if python.exists():
        say(f"==> Using the virtualenv {path}")
        has_pip = subprocess.run(
            [str(python), "-c", "import pip"], capture_output=True, check=False
        )
        if has_pip.returncode != 0:
            # A venv made without pip (uv's, or `venv --without-pip`): give it one.
            pip_bootstrap = [str(python), "-m", "ensurepip", "--default-pip"]
            if subprocess.run(pip_bootstrap, capture_output=True, check=False).returncode:
                raise InstallError(f"{path} has no pip and cannot get one (ensurepip failed)")
        return python
    say(f"==> Creating the virtualenv {path}")
    existed = path.exists()
    try:
        venv.EnvBuilder(with_pip=True).create(path)
    except (OSError, subprocess.CalledProcessError) as exc:
        if not existed:
            shutil.rmtree(path, ignore_errors=True)  # a half-made venv would fail the next run
        raise InstallError(
            f"cannot create a virtualenv at {path} ({exc}); on Debian/Ubuntu "
            "install the venv module first: sudo apt install python3-venv"
        ) from None
    if not python.exists():
        raise InstallError(f"{path} has no {python.name} after creating it")
    return python


def pip(python: Path, *args: str) -> None:
    """Run the venv's pip; its own output shows what went wrong."""
    argv = [str(python), "-m", "pip", "--disable-pip-version-check", *args]
    if subprocess.run(argv, check=False).returncode != 0:
        raise InstallError(f"pip {args[0]} failed (its output is above)")


def build_wheels(python: Path, names: Sequence[str], out: Path) -> dict[str, Path]:
    """Distribution -> its freshly built wheel, from its folder under packages/."""
    say(f"==> Building {len(names)} wheels: {', '.join(names)}")
    wheels: dict[str, Path] = {}
    for name in names:
        pip(python, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(PACKAGES / name))
        prefix = name.replace("-", "_") + "-"
        found = sorted(out.glob(f"{prefix}*.whl"))
        if not found:
            raise InstallError(f"building {name} left no wheel in {out}")
        wheels[name] = found[-1]
    return wheels


def install(python: Path, wheels: dict[str, Path], extras: dict[str, set[str]]) -> None:
    """Install the wheel files together, then put this checkout's code over any older copy.

    The second pass matters when the venv already holds the same version
    built from older code: pip would otherwise call it installed and keep it.
    """
    targets = [
        f"{wheel}[{','.join(sorted(extras[name]))}]" if extras[name] else str(wheel)
        for name, wheel in wheels.items()
    ]
    say("==> Installing them and their dependencies")
    pip(python, "install", "--quiet", *targets)
    pip(python, "install", "--quiet", "--no-deps", "--force-reinstall", *map(str, wheels.values()))


def main(argv: Sequence[str] | None = None) -> int:
    """Build and install; 0 on success, 1 with one line on stderr otherwise."""
    parser = argparse.ArgumentParser(
        prog="install.py",
        description="Install OpenBeepBoop from this checkout into a virtualenv.",
    )
    parser.add_argument(
        "roles",
        nargs="*",
        metavar="ROLE",
        help="all (default), server, node, client; extras in brackets: server[postgresql]",
    )
    parser.add_argument(
        "--venv",
        type=Path,
        default=Path(".venv"),
        help="the virtualenv to install into, created if missing (default: ./.venv)",
    )
    args = parser.parse_args(argv)
    if sys.version_info < (3, 10):  # noqa: UP036 - any python3 a user has may run this
        sys.stderr.write("install.py: error: OpenBeepBoop needs Python >= 3.10\n")
        return 1
    try:
        wanted = parse_roles(args.roles)
        target = args.venv.expanduser().absolute()
        python = ensure_venv(target)
        with tempfile.TemporaryDirectory(prefix="openbeepboop-wheels-") as tmp:
            wheels = build_wheels(python, list(wanted), Path(tmp))
            install(python, wheels, wanted)
    except InstallError as exc:
        sys.stderr.write(f"install.py: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("install.py: interrupted\n")
        return 130
    scripts = venv_python(target).parent
    commands = [
        f"openbeepboop-{role}"
        for role in ("server", "node", "client")
        if f"openbeepboop-{role}" in wanted
    ]
    say(f"\nInstalled {', '.join(wanted)} into {target}")
    for name in commands:
        say(f"  {scripts / name} --help")
    say(f"Or put them on PATH: source {scripts / 'activate'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
