"""Real processes for tests: start with output in a log file, wait, stop, kill.

Everything waits on a condition with a generous deadline (a port accepting
connections, a URL answering, a predicate turning true), never on a fixed
sleep, so tests stay correct on a loaded two-core machine. When a test fails,
:meth:`ProcessSet.dump_logs` shows what every process involved printed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TypeVar

import httpx

logger = logging.getLogger(__name__)

#: Default deadline for a process to come up or for a condition to hold.
DEFAULT_TIMEOUT_SECONDS = 60.0
#: How long SIGTERM is given before SIGKILL.
TERMINATE_GRACE_SECONDS = 15.0
#: Pause between checks of a condition (not a sleep a test relies on).
POLL_INTERVAL_SECONDS = 0.05
#: Bytes of each log shown by :meth:`ProcessSet.dump_logs`.
DUMP_TAIL_BYTES = 20_000

T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    """A condition did not hold before its deadline (an assertion, so pytest reports it)."""


class ProcessExitedError(WaitTimeoutError):
    """The process being waited on exited first: no point waiting out the deadline."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    message: str | Callable[[], str] = "condition",
    interval: float = POLL_INTERVAL_SECONDS,
) -> T:
    """Call ``predicate`` until it returns something truthy; return that.

    Exceptions from the predicate count as "not yet" until the deadline, when
    the last one is chained to the :class:`WaitTimeoutError`.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except ProcessExitedError:
            raise
        except Exception as exc:
            last_error = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise WaitTimeoutError(
                f"timed out after {timeout:.0f}s waiting for {text}"
            ) from last_error
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def url_answers(url: str, status: int = 200) -> bool:
    """True if a GET of ``url`` answers ``status``."""
    try:
        return httpx.get(url, timeout=5).status_code == status
    except httpx.HTTPError:
        return False


def read_port_file(path: Path) -> int | None:
    """The port a process wrote to ``path``, or None while it has not yet."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


class ManagedProcess:
    """One subprocess whose stdout and stderr go to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ManagedProcess:
        """Start it (in its own session, so a Ctrl-C of the test run is not sent to it)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _close_log
        self._log.write(f"$ {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        logger.debug("started %s (pid %s)", self.name, self.popen.pid)
        return self

    @property
    def pid(self) -> int:
        """Its process id."""
        return self._popen().pid

    @property
    def returncode(self) -> int | None:
        """Its exit status, or None while it runs."""
        return self._popen().poll()

    def running(self) -> bool:
        """True while it has not exited."""
        return self.popen is not None and self.popen.poll() is None

    def _popen(self) -> subprocess.Popen[bytes]:
        if self.popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.popen

    def log_text(self) -> str:
        """Everything it printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _alive_or_fail(self, what: str) -> None:
        code = self.returncode
        if code is not None:
            raise ProcessExitedError(
                f"{self.name} exited with status {code} while waiting for {what}; "
                f"its log:\n{self.log_text()[-DUMP_TAIL_BYTES:]}"
            )

    def wait_for(
        self,
        predicate: Callable[[], T | None],
        what: str,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> T:
        """Wait until ``predicate`` holds, failing at once if the process exits."""

        def check() -> T | None:
            self._alive_or_fail(what)
            return predicate()

        return wait_until(check, timeout, what)

    def wait_for_port(self, port: int, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        """Wait until it accepts connections on loopback ``port``."""
        self.wait_for(lambda: port_open(port), f"{self.name} to listen on {port}", timeout)

    def wait_for_url(
        self, url: str, status: int = 200, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        """Wait until GET ``url`` answers ``status`` (e.g. ``/healthz``)."""
        self.wait_for(lambda: url_answers(url, status), f"{url} to answer {status}", timeout)

    def wait_for_port_file(self, path: Path, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> int:
        """Wait until it wrote its port to ``path``; return the port."""
        return self.wait_for(lambda: read_port_file(path), f"{self.name} port file", timeout)

    def wait_for_log(self, text: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        """Wait until ``text`` appears in its output."""
        self.wait_for(lambda: text in self.log_text(), f"{text!r} in {self.name}'s log", timeout)

    def wait(self, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> int:
        """Wait for it to exit by itself; return its status."""
        try:
            code = self._popen().wait(timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeoutError(f"{self.name} did not exit within {timeout:.0f}s") from None
        self._close_log()
        return code

    def signal(self, signum: int) -> None:
        """Send ``signum`` to it (not to its children)."""
        if self.running():
            os.kill(self.pid, signum)

    def terminate(self, timeout: float = TERMINATE_GRACE_SECONDS) -> int:
        """SIGTERM, then SIGKILL of its whole process group if it lingers; return its status."""
        popen = self._popen()
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM for %.0fs; killing it", self.name, timeout)
                self._kill_group()
                popen.wait(timeout)
        self._kill_group()  # leftovers it may have started
        self._close_log()
        return popen.returncode

    def kill(self) -> int:
        """``kill -9`` it, the way a crash or an OOM killer would; return its status."""
        popen = self._popen()
        if popen.poll() is None:
            popen.kill()
        code = popen.wait(TERMINATE_GRACE_SECONDS)
        self._close_log()
        return code

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class ProcessSet:
    """The processes of one test: started together, stopped together, logs on failure."""

    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = dict(env) if env is not None else None
        self.processes: list[ManagedProcess] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        """Start ``argv`` as ``name`` (log: ``log_dir/name.log``; names may repeat)."""
        count = sum(1 for proc in self.processes if proc.name == name)
        log_name = f"{name}.log" if count == 0 else f"{name}.{count}.log"
        merged = {**(self.env or os.environ), **(env or {})}
        proc = ManagedProcess(name, argv, self.log_dir / log_name, merged, cwd)
        self.processes.append(proc.start())
        return proc

    def stop_all(self) -> None:
        """Terminate everything still running, newest first."""
        for proc in reversed(self.processes):
            if proc.popen is not None:
                try:
                    proc.terminate()
                except Exception:
                    logger.exception("could not stop %s", proc.name)

    def dump_logs(self, stream: IO[str] | None = None) -> None:
        """Print the (tail of the) log of every process, for a failed test."""
        out = stream or sys.stdout
        for proc in self.processes:
            status = proc.popen.poll() if proc.popen is not None else "never started"
            out.write(f"\n===== {proc.name} (exit: {status}) {proc.log_path} =====\n")
            out.write(proc.log_text()[-DUMP_TAIL_BYTES:])
            out.write("\n")
        out.flush()

    def __iter__(self) -> Iterator[ManagedProcess]:
        return iter(self.processes)


def run_command(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    input_text: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a one-shot command to completion, capturing its output as text.

    With ``check`` a non-zero exit raises an AssertionError that shows the
    command, its status and everything it printed.
    """
    try:
        done = subprocess.run(
            list(argv),
            env=dict(env) if env is not None else None,
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{' '.join(argv)} did not finish within {timeout:.0f}s") from exc
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {done.returncode}\n"
            f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
        )
    return done
