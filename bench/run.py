"""Run the benchmarks, print the table, append the figures to bench/RESULTS.md.

``nox -s bench`` runs this in a clean venv with wheels of all five
distributions; ``nox -s bench -- --only submit,bulk --quick`` runs a subset,
smaller. Everything runs on loopback in a temp directory: real
``openbeepboop-server start`` processes on SQLite, real nodes or synthetic
ones, the test kit's stand-in LLM as its own process.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script: harness/ and scenarios/ sit beside it
    sys.path.insert(0, str(HERE))

from harness import record  # noqa: E402
from harness.figures import Figure  # noqa: E402
from scenarios import (  # noqa: E402
    Context,
    Scenario,
    bulk,
    capacity,
    deep_queue,
    e2e,
    efficiency,
    node_memory,
    pickup,
    submit,
)

#: In the order they run (cheap, queue-only figures first).
SCENARIOS: dict[str, Scenario] = {
    "submit": submit.run,
    "bulk": bulk.run,
    "capacity": capacity.run,
    "pickup": pickup.run,
    "e2e": e2e.run_one_node,
    "e2e2": e2e.run_two_nodes,
    "efficiency": efficiency.run,
    "deepqueue": deep_queue.run,
    "nodemem": node_memory.run,
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__)
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated scenarios (default: all): {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts (a few minutes)")
    parser.add_argument(
        "--no-record", action="store_true", help="print the table, do not touch RESULTS.md"
    )
    parser.add_argument("--note", default="", help="a line recorded with the run")
    parser.add_argument(
        "--results", type=Path, default=HERE / "RESULTS.md", help="where to append the figures"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record py-spy profiles (folded stacks) of every measured process into DIR",
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()] or list(SCENARIOS)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    args.names = names
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios; exit 1 if one crashed (a missed target is not an error)."""
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.time()
    machine = record.machine()
    print(f"machine: {machine}", flush=True)
    figures: list[Figure] = []
    failed: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="openbeepboop-bench-"))
    ctx = Context(root=root, quick=args.quick, profile_dir=args.profile)
    for name in args.names:
        print(f"--- {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            got = SCENARIOS[name](ctx)
        except Exception:
            traceback.print_exc()
            print(f"--- {name} FAILED (logs under {root})", flush=True)
            failed.append(name)
            continue
        for fig in got:
            met = {True: "ok", False: "MISSED", None: ""}[fig.met]
            target = f" (target {fig.target})" if fig.target else ""
            print(f"    {fig.label}: {fig.measured()}{target} {met}", flush=True)
            print(f"      {fig.detail}", flush=True)
        print(f"--- {name} done in {time.perf_counter() - t0:.0f} s", flush=True)
        figures.extend(got)
    print()
    print(record.table(figures))
    if figures and not args.no_record:
        parameters = f"--only {','.join(args.names)}" + (" --quick" if args.quick else "")
        if failed:
            parameters += f" (crashed: {', '.join(failed)})"
        record.append(
            args.results,
            figures,
            repo=HERE.parent,
            machine=machine,
            parameters=parameters,
            started=started,
            note=args.note,
        )
        print(f"\nappended to {args.results}")
    if args.keep or failed:
        print(f"logs and databases kept in {root}")
    else:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
