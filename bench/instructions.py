"""Instructions per job, node against the bare LiteLLM loop, counted by callgrind.

``.nox/bench/bin/python bench/instructions.py [--jobs 200] [--concurrency 16]``
(from the repository root, in the venv ``nox -s bench`` builds; needs
``valgrind``).

Timings on a shared VM move by 10-25 % from one minute to the next, which
hides the few per cent the node's own work adds to a LiteLLM call.
Instruction counts do not move with the host: the same work counts the
same. Both sides run under ``valgrind --tool=callgrind`` against one stand-in
(20 ms answers), counting only after their warm-up (``--instr-atstart=no``,
then ``callgrind_control -i on``), and the table gives user-space
instructions per job, per thread. What callgrind cannot see: time in the
kernel (system calls, fsync), waiting for the GIL, and context switches.
Under valgrind both sides run ~50 times slower, so a node's fetches and
submits carry more jobs each than at full speed; read the per-request costs
with that in mind.

Takes a few minutes (LiteLLM's import under valgrind is most of it).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.api import UserApi, bulk_body, wait_all_terminal
from harness.cluster import MODEL, PROVIDER_KEY, Cluster
from openbeepboop_testkit.cluster import NODE
from scenarios.e2e import LLM_DELAY, _bare_command

CALLGRIND = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes"]
#: Under valgrind an idle keep-alive connection can sit for seconds between
#: calls; the stand-in must not close it under a client about to reuse it.
KEEP_ALIVE_SECONDS = 600.0
WARM_UP_JOBS = 48
JOB_TIMEOUT = 3600.0


def main() -> None:
    """Count both sides and print instructions per job, per thread."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200, help="counted jobs (and bare calls)")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("instructions.py: error: valgrind (with callgrind_control) is not installed")
    root = Path(tempfile.mkdtemp(prefix="obb-instructions-"))
    with Cluster(root) as cluster:
        standin = cluster.standin(LLM_DELAY, keep_alive=KEEP_ALIVE_SECONDS)
        server = cluster.server()
        server.start()
        bare_out = root / "callgrind.bare"
        bare = subprocess.Popen(
            [
                *CALLGRIND,
                f"--callgrind-out-file={bare_out}",
                *_bare_command(standin, args.concurrency, 0),
                "--serve",
            ],
            env=cluster.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert bare.stdin is not None and bare.stdout is not None
        bare.stdout.readline()  # "ready": imported and warmed up
        _counting(bare.pid, True)
        bare.stdin.write(f"{args.jobs}\n")
        bare.stdin.flush()
        bare.stdout.readline()
        _counting(bare.pid, False)
        bare.stdin.close()
        bare.wait()

        config = root / "node.toml"
        cluster.setup_node(
            server,
            server.node_key,
            "counted",
            config,
            model=MODEL,
            litellm_model="openai/standin-model",
            api_base=standin.base_url,
            concurrency=args.concurrency,
            more=["--model-api-key", PROVIDER_KEY],
        )
        node_out = root / "callgrind.node"
        node = cluster.procs.start(
            "node",
            [
                *CALLGRIND,
                f"--callgrind-out-file={node_out}",
                sys.executable,
                NODE,
                "run",
                "--config",
                str(config),
            ],
            env=cluster.env,
        )
        asyncio.run(_jobs(server.url, server.user_key, WARM_UP_JOBS, "warm"))
        _counting(node.pid, True)
        counts = asyncio.run(_jobs(server.url, server.user_key, args.jobs, "counted"))
        _counting(node.pid, False)
        node.terminate()
    if counts.get("COMPLETED") != args.jobs:
        sys.exit(f"instructions.py: error: jobs ended {counts}; the counts would mislead")
    print(f"instructions per job ({args.jobs} jobs, concurrency {args.concurrency}):")
    for name, out in (("bare loop", bare_out), ("node", node_out)):
        threads = _thread_totals(out)
        total = sum(threads)
        per_thread = ", ".join(f"{count / args.jobs / 1e6:.2f}" for count in threads if count)
        print(f"  {name:9s} {total / args.jobs / 1e6:6.2f} M  (threads: {per_thread})")
    print(f"callgrind files: {root} (callgrind_annotate FILE)")


async def _jobs(url: str, key: str, count: int, tag: str) -> dict[str, int]:
    api = UserApi(url, key)
    try:
        ids = await api.bulk(bulk_body(0, count, tag))
        return await wait_all_terminal(api, ids, JOB_TIMEOUT)
    finally:
        await api.aclose()


def _counting(pid: int, on: bool) -> None:
    """Switch counting on or off; off also writes the counts out (a dump per thread)."""
    switch = "on" if on else "off"
    subprocess.run(["callgrind_control", "-i", switch, str(pid)], check=True, capture_output=True)
    if not on:
        subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)


def _thread_totals(out: Path) -> list[int]:
    """Instructions counted per thread, from the dumps (``OUT.<dump>-<thread>``)."""
    totals: dict[str, int] = {}
    for dump in sorted(out.parent.glob(out.name + ".*-*")):
        thread = dump.name.rsplit("-", 1)[1]
        for line in dump.read_text().splitlines():
            if line.startswith("totals:"):
                totals[thread] = totals.get(thread, 0) + int(line.split()[1])
    return [totals[thread] for thread in sorted(totals)]


if __name__ == "__main__":
    main()
