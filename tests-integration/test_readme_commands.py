"""The README's "Using it" commands and library example, run as written.

The fenced blocks are read out of README.md, so a command that stops working
(a missing flag, a model nobody serves, a renamed option) fails here. What a
user would put in is put in, and nothing else: the keys ``keys create``
printed where ``sk-NODE-KEY`` / ``sk-USER-KEY`` stand, the id ``submit``
printed for ``job-...``, a free port for 8000 (``--port`` at setup), the
stand-in LLM's URL for the model server at 8080, and the README's example
line as ``prompts.jsonl``. Config files stay where each program puts them by
default: the user config dir, which :func:`isolated_env` moves into the test's
temp dir along with ``HOME``. ``start`` and ``run`` keep running, as the
README says, in processes of their own.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from openbeepboop_testkit.cluster import BIN, KEY_PATTERN, isolated_env
from openbeepboop_testkit.processes import ProcessSet, free_port
from openbeepboop_testkit.standin import StandinLLM

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: Generous: LiteLLM takes seconds to import on a loaded two-core machine.
COMMAND_TIMEOUT_SECONDS = 180
#: What the README writes, and what the test puts in its place.
README_SERVER_URL = "http://127.0.0.1:8000"
README_MODEL_SERVER = "http://127.0.0.1:8080/v1"
JOB_ID = re.compile(r"job-[0-9a-f]{8,}")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def section(text: str, heading: str) -> str:
    """The Markdown after ``heading`` up to the next heading of its level or higher."""
    level = len(heading.split(" ", 1)[0])
    lines = text.splitlines(keepends=True)
    start = lines.index(heading + "\n") + 1
    in_fence = False
    for end in range(start, len(lines)):
        line = lines[end]
        in_fence ^= line.startswith("```")
        marks = len(line) - len(line.lstrip("#"))
        if not in_fence and 0 < marks <= level and line[marks : marks + 1] == " ":
            return "".join(lines[start:end])
    return "".join(lines[start:])


def blocks(text: str, language: str) -> list[str]:
    """The bodies of the fenced blocks of one language."""
    return [body for lang, body in FENCE.findall(text) if lang == language]


def shell_commands(block: str) -> list[list[str]]:
    """A bash block's commands as argv lists: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", block)
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    """One command to completion without a terminal; its stdout (stderr on failure)."""
    done = subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )
    shown = shlex.join([Path(argv[0]).name, *argv[1:]])
    assert done.returncode == 0, f"`{shown}` exited {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


def test_readme_using_it_commands_and_library_example_run_as_written(
    tmp_path: Path, procs: ProcessSet, llm: StandinLLM
) -> None:
    using_it = section(README.read_text(encoding="utf-8"), "## Using it")
    (commands_block,) = blocks(using_it, "bash")
    (prompt_line,) = blocks(using_it, "json")
    (library,) = blocks(using_it, "python")
    (tmp_path / "prompts.jsonl").write_text(prompt_line)

    env = isolated_env(tmp_path)
    port = free_port()
    server_url = f"http://127.0.0.1:{port}"
    words = {README_SERVER_URL: server_url, README_MODEL_SERVER: llm.base_url}
    outputs: list[tuple[list[str], str]] = []
    for readme_argv in shell_commands(commands_block):
        argv = [str(BIN / readme_argv[0]), *(words.get(w, w) for w in readme_argv[1:])]
        program, verb = readme_argv[0], readme_argv[1]
        if (program, verb) == ("openbeepboop-server", "setup"):
            argv += ["--port", str(port)]  # 8000 may be taken on this machine
        if (program, verb) == ("openbeepboop-server", "start"):
            procs.start("server", argv, env=env).wait_for_url(f"{server_url}/healthz")
            continue
        if (program, verb) == ("openbeepboop-node", "run"):
            procs.start("node", argv, env=env)
            continue
        out = run(argv, env, tmp_path)
        outputs.append((readme_argv, out))
        if (program, verb) == ("openbeepboop-server", "keys"):
            key = KEY_PATTERN.search(out)
            assert key is not None, out
            words["sk-" + readme_argv[readme_argv.index("--role") + 1] + "-KEY"] = key.group(0)
        if (program, verb) == ("openbeepboop-client", "submit") and "--wait" not in argv:
            job = JOB_ID.search(out)
            assert job is not None, out
            words["job-..."] = job.group(0)

    ran = {" ".join(argv[:2]) for argv, _ in outputs}
    assert {"openbeepboop-node setup", "openbeepboop-client results"} <= ran
    waited = next(out for argv, out in outputs if argv[1] == "submit" and "--wait" in argv)
    assert "Echo: Explain quantum computing in one sentence." in waited  # the stand-in's answer
    polled = next(out for argv, out in outputs if argv[1] == "poll")
    assert words["job-..."] in polled
    (answer,) = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert answer["custom_id"] == "q1"
    content = answer["response"]["body"]["choices"][0]["message"]["content"]
    assert "Name three primary colours." in content

    # The library example, as a user would run it after the commands above.
    (tmp_path / "example.py").write_text(library)
    printed = run([sys.executable, "example.py"], env, tmp_path)
    assert re.search(r"^Job submitted with ID: job-", printed, re.M), printed
    assert "Result: Echo: Explain quantum computing in one sentence." in printed
    assert "Warning:" not in printed  # the node serves the README's model
    # Every call reached the model server under the model the node maps smollm2 to.
    calls = llm.calls()
    assert calls and {call.model for call in calls} == {"smollm2-135m-instruct"}


def test_ci_runs_exactly_the_readme_test_command() -> None:
    running_tests = section(README.read_text(encoding="utf-8"), "## Running the tests")
    readme_command = blocks(running_tests, "bash")[0].strip()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line for line in ci_lines if line and not line.startswith(("#", "set ", "cd "))]
    assert commands[-1] == readme_command


def test_readme_never_pip_installs_into_the_global_python() -> None:
    # A stock Debian/Ubuntu Python refuses it (PEP 668); elsewhere it changes the
    # user's packages. Only the "once published" commands, for a venv, may.
    text = README.read_text(encoding="utf-8")
    published = section(text, "### From an index (once published; not yet)")
    for block in blocks(text.replace(published, ""), "bash"):
        for line in block.splitlines():
            assert "python3 -m pip" not in line, line
            if "pip install" in line:
                assert ".venv/bin/pip install" in line, line
