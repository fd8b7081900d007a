"""The machine a run happened on, the table it printed, the entry in RESULTS.md."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from harness.figures import Figure


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_sha(repo: Path) -> str:
    """The checked-out commit (``+dirty`` when bench-relevant files have local edits)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "packages", "bench"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha


#: A chat.completion-sized document: the speed check's unit of work.
_SPEED_CHECK_DOC = {
    "id": "chatcmpl-speed",
    "object": "chat.completion",
    "choices": [
        {"index": i, "message": {"role": "assistant", "content": "x" * 64}} for i in range(8)
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46},
}


def speed_check_ms() -> float:
    """Milliseconds for a fixed pure-Python workload (best of 5; lower is faster).

    The bench machine is a shared VM whose speed drifts from day to day (the
    same commit's figures have halved between two sessions); this number,
    recorded with every run, tells a slower host from a slower commit.
    """
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(5000):
            json.loads(json.dumps(_SPEED_CHECK_DOC))
        best = min(best, time.perf_counter() - started)
    return best * 1e3


def machine() -> str:
    """One line: cores, CPU, RAM, Python, OS, load, and the speed check."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs (nproc), {cpu_model()}, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}; "
        f"load average at start {load} (shared machine); "
        f"speed check {speed_check_ms():.0f} ms (fixed pure-Python work, lower is faster)"
    )


def table(figures: Sequence[Figure]) -> str:
    """The figures as a Markdown table."""
    lines = [
        "| figure | measured | target | met | bound by |",
        "| --- | --- | --- | --- | --- |",
    ]
    for fig in figures:
        met = {True: "yes", False: "**NO**", None: "—"}[fig.met]
        target = str(fig.target) if fig.target else "—"
        lines.append(f"| {fig.label} | {fig.measured()} | {target} | {met} | {fig.bound} |")
    return "\n".join(lines)


def details(figures: Sequence[Figure]) -> str:
    """One bullet per figure with its parameters and side numbers."""
    return "\n".join(f"- {fig.label}: {fig.detail}" for fig in figures if fig.detail)


def append(
    results: Path,
    figures: Sequence[Figure],
    *,
    repo: Path,
    machine: str,
    parameters: str,
    started: float,
    note: str = "",
) -> str:
    """Append one run's entry to RESULTS.md; the entry's text."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    took = time.time() - started
    entry = "\n".join(
        [
            f"### {when} — `{git_sha(repo)}`",
            "",
            f"- machine: {machine}",
            f"- parameters: {parameters}; run took {took:.0f} s",
            *([f"- note: {note}"] if note else []),
            "",
            table(figures),
            "",
            details(figures),
            "",
            "",
        ]
    )
    with results.open("a") as out:
        out.write(entry)
    return entry
