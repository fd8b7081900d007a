"""Run the benchmarks, print the table, keep the full detail under bench/out/.

``nox -s bench`` runs this in a clean venv with wheels of all five
distributions; ``nox -s bench -- --only submit,bulk --quick`` runs a subset,
smaller. Everything runs on loopback in a temp directory: real
``openbeepboop-server start`` processes on SQLite, real nodes or synthetic
ones, the test kit's stand-in LLM as its own process. Every run's detail goes
to a folder of its own under ``bench/out/`` (ignored by git); ``--record``
also puts the run into bench/RESULTS.md (its figures become the latest, and
the history table gets a row).
"""

from __future__ import annotations

import argparse
import logging
import shlex
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
    cancel,
    capacity,
    deep_queue,
    e2e,
    efficiency,
    node_memory,
    openai_surface,
    pickup,
    replicas,
    submit,
)

#: In the order they run (cheap, queue-only figures first).
SCENARIOS: dict[str, Scenario] = {
    "submit": submit.run,
    "bulk": bulk.run,
    "capacity": capacity.run,
    "pickup": pickup.run,
    "cancel": cancel.run,
    "e2e": e2e.run_one_node,
    "e2e2": e2e.run_two_nodes,
    "efficiency": efficiency.run,
    "deepqueue": deep_queue.run,
    "nodemem": node_memory.run,
    "openai_sync": openai_surface.run_sync,
    "openai_batch": openai_surface.run_batch,
    "openai_ratio": openai_surface.run_ratio,
    # Replicas on PostgreSQL (a fresh database per scenario; docs/deploy.md).
    "pgcapacity": replicas.run_capacity_two,
    "pgpickup": replicas.run_pickup_across,
    "pge2e": replicas.run_e2e,
    "pgidle": replicas.run_idle,
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
        "--record",
        action="store_true",
        help="also record the run in RESULTS.md (latest figures and a history row)",
    )
    parser.add_argument("--note", default="", help="a line kept with the run (what changed)")
    parser.add_argument(
        "--results", type=Path, default=HERE / "RESULTS.md", help="the file --record updates"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE / "out",
        help="where each run's full detail goes, one folder per run (default: bench/out)",
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
    command = shlex.join(["bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.time()
    machine = record.machine()
    print(f"machine: {machine}", flush=True)
    figures: list[tuple[str, Figure]] = []
    outputs: dict[str, str] = {}
    failed: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="openbeepboop-bench-"))
    ctx = Context(root=root, quick=args.quick, profile_dir=args.profile)
    for name in args.names:
        print(f"--- {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            got = SCENARIOS[name](ctx)
        except Exception:
            outputs[name] = traceback.format_exc()
            print(outputs[name], end="", file=sys.stderr, flush=True)
            print(f"--- {name} FAILED (logs under {root})", flush=True)
            failed.append(name)
            continue
        lines: list[str] = []
        for fig in got:
            met = {True: "ok", False: "MISSED", None: ""}[fig.met]
            target = f" (target {fig.target})" if fig.target else ""
            lines += [f"    {fig.label}: {fig.measured()}{target} {met}", f"      {fig.detail}"]
        outputs[name] = "\n".join(lines) + "\n"
        print(outputs[name], end="", flush=True)
        print(f"--- {name} done in {time.perf_counter() - t0:.0f} s", flush=True)
        figures.extend((name, fig) for fig in got)
    if failed:
        command += f" (crashed: {', '.join(failed)})"
    run = record.Run(
        started=started,
        sha=record.git_sha(HERE.parent),
        machine=machine,
        command=command,
        took=time.time() - started,
        note=args.note,
        figures=figures,
    )
    print()
    print(record.table(figures))
    print(f"\nfull detail in {record.write_detail(args.out, run, outputs)}")
    if figures and args.record:
        record.record(args.results, run)
        print(f"recorded in {args.results}")
    if args.keep or failed:
        print(f"logs and databases kept in {root}")
    else:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
