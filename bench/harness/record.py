"""The machine a run happened on, its table, its full detail, and its place in RESULTS.md.

Every run writes its full detail (machine line, command, table, each figure's
side numbers, each scenario's raw output) to a folder of its own under
``bench/out/`` (ignored by git). Only a run made with ``--record`` touches
``bench/RESULTS.md``, in two places:

- "Latest recorded figures": one block per recorded run that still holds the
  newest figures of some scenario. A new run's block goes first; the rows of
  the scenarios it ran leave the older blocks, and a block left with no rows
  is dropped. Every row and detail bullet starts with its scenario in
  backquotes, which is how a later run finds them.
- "History": one row per recorded run, appended at the end of the table.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness.figures import Figure, fmt


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


#: Where RESULTS.md's sections start; everything before the first is kept as written.
LATEST_HEADING = "## Latest recorded figures"
HISTORY_HEADING = "## History"

#: The history table's figure columns: header, and the key of the figure it shows.
HISTORY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("single submits /s", "submit"),
    ("bulk /s", "bulk"),
    ("capacity /s", "capacity"),
    ("pickup p50 ms", "pickup_p50"),
    ("1 x 1 jobs/s", "e2e_1x1"),
    ("one job p50 ms", "single_p50"),
    ("2 x 16 jobs/s", "e2e_2x16"),
    ("efficiency %", "efficiency"),
    ("claim 1M ÷ 1k", "claim_ratio"),
    ("server MB", "server_rss"),
    ("node MB", "node_rss"),
)

_SPEED_CHECK = re.compile(r"speed check (\d+) ms")


@dataclass
class Run:
    """One run of ``run.py``: where, what, and the figures each scenario measured."""

    started: float
    sha: str
    machine: str
    #: How it was started, e.g. ``bench/run.py --record --only pickup``.
    command: str
    took: float
    note: str = ""
    #: (scenario, figure), in the order they ran.
    figures: list[tuple[str, Figure]] = field(default_factory=list)

    @property
    def when(self) -> str:
        """``2026-12-02 14:37 UTC``."""
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.started))

    @property
    def scenarios(self) -> list[str]:
        """The scenarios that produced figures, in order."""
        return list(dict.fromkeys(scenario for scenario, _ in self.figures))


def table(figures: Sequence[tuple[str, Figure]]) -> str:
    """The figures as a Markdown table, each row led by its scenario."""
    lines = [
        "| scenario | figure | measured | target | met | bound by |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for scenario, fig in figures:
        met = {True: "yes", False: "**NO**", None: "—"}[fig.met]
        target = str(fig.target) if fig.target else "—"
        lines.append(
            f"| `{scenario}` | {fig.label} | {fig.measured()} | {target} | {met} | {fig.bound} |"
        )
    return "\n".join(lines)


def details(figures: Sequence[tuple[str, Figure]]) -> str:
    """One bullet per figure with its parameters and side numbers."""
    return "\n".join(
        f"- `{scenario}` {fig.label}: {fig.detail}" for scenario, fig in figures if fig.detail
    )


def entry(run: Run) -> str:
    """The run's block: heading, machine line, command, table, details."""
    lines = [
        f"### {run.when} — `{run.sha}`",
        "",
        f"- command: `{run.command}`; run took {run.took:.0f} s",
        f"- machine: {run.machine}",
        *([f"- note: {run.note}"] if run.note else []),
        "",
        table(run.figures),
        "",
    ]
    if any(fig.detail for _, fig in run.figures):
        lines += [details(run.figures), ""]
    return "\n".join(lines)


def history_row(run: Run) -> str:
    """The run's row in the history table (``—`` for figures it did not measure)."""
    by_key = {fig.key: fig for _, fig in run.figures}
    with_target = [fig for _, fig in run.figures if fig.met is not None]
    met = sum(1 for fig in with_target if fig.met)
    speed = _SPEED_CHECK.search(run.machine)
    cells = [
        run.when.removesuffix(" UTC"),
        f"`{run.sha}`",
        f"{speed.group(1)} ms" if speed else "—",
        f"{met} of {len(with_target)}",
        *(fmt(by_key[key].value) if key in by_key else "—" for _, key in HISTORY_COLUMNS),
    ]
    return "| " + " | ".join(cells) + " |"


def history_header() -> str:
    """The history table's two header lines."""
    headers = ["date (UTC)", "commit", "speed check", "targets met"]
    headers += [header for header, _ in HISTORY_COLUMNS]
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)])


def write_detail(out: Path, run: Run, outputs: dict[str, str]) -> Path:
    """The run's full detail in a folder of its own under ``out``; the folder.

    ``run.md`` holds the block RESULTS.md would get; ``<scenario>.txt`` what
    each scenario printed (figures and side numbers, or its traceback).
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(run.started))
    folder = out / f"{stamp}-{run.sha}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.md").write_text(entry(run))
    for scenario, text in outputs.items():
        (folder / f"{scenario}.txt").write_text(text)
    return folder


def _scenario_of(line: str) -> str | None:
    """The scenario a row or detail bullet of the latest section belongs to."""
    match = re.match(r"^(?:\| |- )`([a-z0-9_]+)`", line)
    return match.group(1) if match else None


def _blocks(section: str) -> tuple[list[str], list[list[str]]]:
    """The latest section as its preamble lines and one list of lines per run block."""
    preamble: list[str] = []
    blocks: list[list[str]] = []
    for line in section.splitlines():
        if line.startswith("### "):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
        else:
            preamble.append(line)
    return preamble, blocks


def _without(block: list[str], scenarios: set[str]) -> list[str] | None:
    """``block`` without the rows and bullets of ``scenarios``; None if no row is left."""
    kept = [line for line in block if _scenario_of(line) not in scenarios]
    if not any(line.startswith("| `") for line in kept):
        return None
    return kept


_EMPTY = f"""# Benchmark results

Written by `bench/run.py --record` (`nox -s bench -- --record`).

{LATEST_HEADING}

{HISTORY_HEADING}

{{header}}
"""


def record(results: Path, run: Run) -> None:
    """Put ``run`` into RESULTS.md: its block first under the latest figures, a history row."""
    text = results.read_text() if results.exists() else _EMPTY.format(header=history_header())
    head, found, rest = text.partition(LATEST_HEADING + "\n")
    latest, found_history, history = rest.partition(HISTORY_HEADING + "\n")
    if not (found and found_history):
        raise ValueError(f"{results} lacks the {LATEST_HEADING!r} or {HISTORY_HEADING!r} heading")
    preamble, blocks = _blocks(latest)
    ran = set(run.scenarios)
    kept = [trimmed for block in blocks if (trimmed := _without(block, ran)) is not None]
    new_latest = "\n".join([*preamble, entry(run), *("\n".join(block) for block in kept)])
    history_lines = history.rstrip("\n").split("\n")
    last_row = max(i for i, line in enumerate(history_lines) if line.startswith("|"))
    history_lines.insert(last_row + 1, history_row(run))
    results.write_text(
        head
        + LATEST_HEADING
        + "\n"
        + new_latest.rstrip("\n")
        + "\n\n"
        + HISTORY_HEADING
        + "\n"
        + "\n".join(history_lines)
        + "\n"
    )
