"""CPU and memory of the processes taking part in a measurement.

A figure is only useful with what bounds it. The cheapest honest indicator is
how much CPU each process burnt during the measurement window: a process near
100% of one core is the wall (Python is single-threaded where it matters); if
nobody is, the figure is bound by latency (round trips, sleeps, the LLM).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` now, in MB (VmRSS)."""
    return float(psutil.Process(pid).memory_info().rss) / 1e6


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of ``pid`` so far, in MB (VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    return rss_mb(pid)


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idling, since boot."""
    times = psutil.cpu_times()
    # (guest time is already counted in user time, so it is not added again)
    busy = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(getattr(times, name, 0.0) for name in busy))


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


#: Cores used by other processes above which a figure counts as disturbed.
DISTURBED_CORES = 0.5
#: Share of one core from which a process counts as the bottleneck.
SATURATED = 0.8


@dataclass
class CpuShare:
    """What share of one core each process used over a window."""

    seconds: float
    shares: dict[str, float]
    #: CPU used by every other process on the machine, in cores (the machine is shared).
    others: float = 0.0

    def describe(self) -> str:
        """``server 97%, harness 41%, ...`` (of one core), busiest first, then the rest."""
        parts = sorted(self.shares.items(), key=lambda item: -item[1])
        ours = ", ".join(f"{name} {share:.0%}" for name, share in parts)
        mark = " (DISTURBED: re-run when the machine is quieter)" if self.disturbed else ""
        return f"{ours}; other processes {self.others:.2f} cores{mark}"

    @property
    def disturbed(self) -> bool:
        """True when other work took more than half a core: re-run the figure."""
        return self.others > DISTURBED_CORES

    def busiest(self) -> tuple[str, float]:
        """The process closest to a full core, and its share."""
        return max(self.shares.items(), key=lambda item: item[1])

    def bound(self, latency_chain: str = "round trips") -> str:
        """The saturated process, or the latency chain when none is.

        Above ~80% of one core a Python process is the wall (its event loop
        and GIL serialise the work); below that the figure waits on
        something else.
        """
        name, share = self.busiest()
        total = sum(self.shares.values())
        if share >= SATURATED:
            return f"{name} CPU ({share:.0%} of a core; all processes {total:.0%} of 2)"
        if self.disturbed:
            return (
                f"shared-machine contention (others used {self.others:.1f} of 2 cores; "
                f"busiest of ours: {name} {share:.0%})"
            )
        return f"{latency_chain} (busiest: {name} {share:.0%} of a core)"

    def per_item_ms(self, name: str, count: int) -> float:
        """CPU milliseconds ``name`` spent per item (load-independent-ish cost)."""
        return self.shares.get(name, 0.0) * self.seconds / count * 1e3 if count else 0.0


class CpuMeter:
    """Measure CPU shares of named processes between :meth:`start` and :meth:`stop`.

    The harness's own process is always included, as ``harness``. The load
    average at the start is kept too: the machine is shared.
    """

    def __init__(self, pids: Mapping[str, int], profile: Path | None = None) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._procs["harness"] = psutil.Process(os.getpid())
        self._start: dict[str, float] = {}
        self._t0 = 0.0
        self._busy0 = 0.0
        self._profile = profile
        self._spies: list[subprocess.Popen[bytes]] = []

    def start(self) -> CpuMeter:
        """Begin the window (and the profilers, with ``--profile``)."""
        if self._profile is not None:
            self._spy()
        self._start = {name: _cpu_seconds(proc) for name, proc in self._procs.items()}
        self._busy0 = _machine_busy_seconds()
        self._t0 = time.perf_counter()
        return self

    def stop(self) -> CpuShare:
        """End the window; shares of one core per process."""
        elapsed = time.perf_counter() - self._t0
        shares: dict[str, float] = {}
        for name, proc in self._procs.items():
            try:
                used = _cpu_seconds(proc) - self._start[name]
            except psutil.Error:
                continue
            shares[name] = used / elapsed if elapsed > 0 else 0.0
        busy = (_machine_busy_seconds() - self._busy0) / elapsed if elapsed > 0 else 0.0
        others = max(0.0, busy - sum(shares.values()))
        for spy in self._spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for spy in self._spies:
            spy.wait(60)
        self._spies = []
        return CpuShare(seconds=elapsed, shares=shares, others=others)

    def _spy(self) -> None:
        """One ``py-spy record`` per process: folded stacks, 200 Hz, GIL holder only (CPU)."""
        assert self._profile is not None
        beside = Path(sys.executable).with_name("py-spy")  # a venv's bin is not always on PATH
        spy = str(beside) if beside.exists() else shutil.which("py-spy")
        if spy is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy)")
        self._profile.mkdir(parents=True, exist_ok=True)
        for name, proc in self._procs.items():
            if name == "harness":
                continue
            out = self._profile / f"{name}.folded"
            argv = [spy, "record", "--pid", str(proc.pid), "--rate", "200", "--format", "raw"]
            argv += ["--output", str(out), "--nonblocking", "--gil"]
            self._spies.append(
                subprocess.Popen(
                    argv,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(0.5)  # let the samplers attach before the clock starts
