"""Process helpers wait on conditions and stop what they start."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest
from openbeepboop_testkit.processes import (
    ProcessExitedError,
    ProcessSet,
    WaitTimeoutError,
    free_port,
    run_command,
    wait_until,
)


def test_wait_until_returns_the_value_and_times_out() -> None:
    values = iter([None, 0, "yes"])
    assert wait_until(lambda: next(values), timeout=5, interval=0.001) == "yes"
    with pytest.raises(WaitTimeoutError, match="never"):
        wait_until(lambda: None, timeout=0.05, message="never")


def test_a_process_that_exits_fails_the_wait_at_once(tmp_path: Path) -> None:
    procs = ProcessSet(tmp_path)
    proc = procs.start("quitter", [sys.executable, "-c", "print('bye'); raise SystemExit(3)"])
    started = time.monotonic()
    with pytest.raises(ProcessExitedError, match="bye"):
        proc.wait_for_port(free_port(), timeout=60)
    assert time.monotonic() - started < 30
    assert proc.returncode == 3


def test_terminate_escalates_to_kill(tmp_path: Path) -> None:
    procs = ProcessSet(tmp_path)
    script = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('sta' + 'rted', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = procs.start("stubborn", [sys.executable, "-c", script])
    proc.wait_for_log("started")
    assert proc.terminate(timeout=0.5) == -signal.SIGKILL


def test_dump_logs_shows_every_process(tmp_path: Path) -> None:
    import io

    procs = ProcessSet(tmp_path)
    procs.start("a", [sys.executable, "-c", "print('from a')"]).wait()
    out = io.StringIO()
    procs.dump_logs(out)
    assert "===== a (exit: 0)" in out.getvalue() and "from a" in out.getvalue()


def test_run_command_reports_failures() -> None:
    assert run_command([sys.executable, "-c", "print(42)"]).stdout.strip() == "42"
    with pytest.raises(AssertionError, match="exited 2"):
        run_command([sys.executable, "-c", "import sys; sys.exit(2)"])
