"""``nox -s demo -- --keep``: the stack stays up, and what it prints works as printed.

The demo runs against the stand-in LLM (``--api-base``), as the quick start
documents for your own endpoint: the real model's run is slower than CI can
afford, and the llama.cpp launcher the demo uses is covered by
test_real_model.py. What is checked is what a new user does next: paste the
client command, paste the library snippet, then paste the stop command.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from openbeepboop_testkit.processes import wait_until
from openbeepboop_testkit.standin import DEFAULT_MODEL, StandinLLM

ROOT = Path(__file__).resolve().parent.parent
#: The whole demo on a loaded two-core machine (LiteLLM imports, six jobs).
DEMO_TIMEOUT_SECONDS = 600
STOP_TIMEOUT_SECONDS = 120


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture
def kept_pids() -> Iterator[list[int]]:
    """The pids the demo left running; whatever the test did not stop is killed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def test_demo_keep_leaves_a_working_stack_and_says_how_to_use_and_stop_it(
    tmp_path: Path, llm: StandinLLM, kept_pids: list[int]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBEEPBOOP_")}
    env["TMPDIR"] = str(tmp_path)  # the demo's temporary directory lands here
    argv = [sys.executable, "demo/quickstart.py", "--keep", "--api-base", llm.base_url]
    argv += ["--litellm-model", f"openai/{DEFAULT_MODEL}"]
    done = subprocess.run(
        argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        check=False,
    )
    out = done.stdout
    kill_line = re.search(r"^\s+kill ([\d ]+)$", out, re.M)
    if kill_line:
        kept_pids.extend(int(pid) for pid in kill_line.group(1).split())
    assert done.returncode == 0, out + done.stderr
    assert "Echo: What is the capital of France?" in out
    assert "==> Stopping" not in out
    assert len(kept_pids) == 2  # the node and the server (the model is the stand-in's)
    assert all(alive(pid) for pid in kept_pids)

    # The printed client command, pasted as is.
    client_line = re.search(r"^\s+(\S+/openbeepboop-client submit .*)$", out, re.M)
    assert client_line is not None, out
    answered = subprocess.run(
        shlex.split(client_line.group(1)),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        check=False,
    )
    assert answered.returncode == 0, answered.stdout + answered.stderr
    assert "Echo: Write a haiku about queues." in answered.stdout

    # The printed library snippet, pasted into the printed interpreter.
    snippet = re.search(r"The library \((\S+)\):\n((?:    .*\n|\n)+?)\n  Stop", out)
    assert snippet is not None, out
    code = "\n".join(line[4:] for line in snippet.group(2).splitlines())
    ran = subprocess.run(
        [snippet.group(1), "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Echo: Name three primary colours." in ran.stdout

    # The printed stop commands, pasted as is: everything stops, the files go.
    workdir = re.search(r"^\s+rm -rf (\S+)$", out, re.M)
    assert workdir is not None and Path(workdir.group(1)).is_relative_to(tmp_path)
    assert kill_line is not None
    subprocess.run(["bash", "-c", kill_line.group(0).strip()], check=True)
    wait_until(
        lambda: not any(alive(pid) for pid in kept_pids),
        timeout=STOP_TIMEOUT_SECONDS,
        message="the kept processes to stop",
    )
    subprocess.run(["bash", "-c", f"rm -rf {shlex.quote(workdir.group(1))}"], check=True)
    assert not Path(workdir.group(1)).exists()
