"""Run the client's command line in a process of its own and read its peak memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: Runs the command line, then writes its process's peak RSS (VmHWM, in kB) to argv[1].
#: VmHWM belongs to the program exec'd, whereas ru_maxrss also counts the
#: pytest process the child was forked from.
PEAK_RSS_SCRIPT = """
import atexit, re, sys
out = sys.argv.pop(1)
def report():
    status = open("/proc/self/status").read()
    open(out, "w").write(re.search(r"VmHWM:\\s*(\\d+) kB", status).group(1))
atexit.register(report)
from openbeepboop.cli import main
main()
"""

#: Where the peak can be read: Linux's /proc.
HAS_PROC = Path("/proc/self/status").exists()


def client_peak_rss(peak_file: Path, *args: str) -> int:
    """Run ``openbeepboop-client ARGS`` to success; its peak RSS in bytes."""
    argv = [sys.executable, "-c", PEAK_RSS_SCRIPT, str(peak_file)]
    done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(peak_file.read_text()) * 1024
