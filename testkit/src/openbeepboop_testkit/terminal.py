"""Run a command the way a person does: its stdout and stderr on pseudo-terminals.

Commands behave differently for a person than for a pipe (``submit --wait``
prints the answer's text on a terminal and the poll JSON into a pipe, and
draws a status line only on a terminal's stderr). ``isatty()`` cannot be
faked from outside, so tests give the command real pseudo-terminals: one for
stdout and one for stderr, so the two can still be told apart. A terminal
turns ``\\n`` into ``\\r\\n``; the text returned turns it back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pty
import select
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: How long a command may run before the test gives up on it.
DEFAULT_TIMEOUT_SECONDS = 120.0
#: Columns the terminals claim (the status line is cut to the width).
COLUMNS = 200


@dataclass(frozen=True)
class TerminalRun:
    """What a command printed on its terminals, and how it exited."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def _read_available(fd: int) -> bytes | None:
    """Bytes waiting on a master side; None once the command closed its side."""
    try:
        data = os.read(fd, 65536)
    except OSError as exc:
        if exc.errno == errno.EIO:  # Linux: every slave end is closed
            return None
        raise
    return data or None


def run_in_terminal(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    stderr_terminal: bool = True,
) -> TerminalRun:
    """Run ``argv`` with stdout (and stderr, unless told) on a pseudo-terminal; stdin is null.

    Raises AssertionError if it does not finish within ``timeout`` seconds
    (after killing it).
    """
    out_master, out_slave = pty.openpty()
    err_master, err_slave = pty.openpty() if stderr_terminal else os.pipe()
    environment = {**(dict(env) if env is not None else os.environ), "COLUMNS": str(COLUMNS)}
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out_slave,
            stderr=err_slave,
            env=environment,
            close_fds=True,
        )
    finally:
        os.close(out_slave)
        os.close(err_slave)
    chunks: dict[int, list[bytes]] = {out_master: [], err_master: []}
    open_fds = [out_master, err_master]
    deadline = time.monotonic() + timeout
    try:
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                proc.wait()
                raise AssertionError(f"{' '.join(argv)} did not finish within {timeout:.0f}s")
            ready, _, _ = select.select(open_fds, [], [], min(left, 1.0))
            for fd in ready:
                data = _read_available(fd)
                if data is None:
                    open_fds.remove(fd)
                else:
                    chunks[fd].append(data)
        returncode = proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for fd in (out_master, err_master):
            with contextlib.suppress(OSError):
                os.close(fd)

    def text(fd: int) -> str:
        return b"".join(chunks[fd]).decode("utf-8", "replace").replace("\r\n", "\n")

    return TerminalRun(list(argv), returncode, text(out_master), text(err_master))
