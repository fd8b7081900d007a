"""The result spool: durable before delivery, gone after the ack, kill -9 safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from openbeepboop_node.spool import ROWS_PER_STATEMENT, Spool, outcome_key
from openbeepboop_schemas import ErrorOutcome, NodeError, ResultOutcome


def result(job_id: str) -> ResultOutcome:
    return ResultOutcome.model_validate(
        {
            "job_id": job_id,
            "lease_token": f"tok-{job_id}",
            "result": {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
                "system_fingerprint": "kept",
            },
        }
    )


def test_add_pending_remove(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "state" / "spool.sqlite3")
    error = ErrorOutcome(
        job_id="job-2", lease_token="t2", error=NodeError(message="x", retryable=False)
    )
    spool.add([result("job-1"), error])
    assert len(spool) == 2
    pending = spool.pending()
    assert pending == [result("job-1"), error]
    assert pending[0].result.model_extra == {"system_fingerprint": "kept"}  # type: ignore[union-attr]
    spool.remove([outcome_key(error)])
    assert spool.pending() == [result("job-1")]
    spool.add([result("job-1")])  # the same lease twice is stored once
    assert len(spool) == 1
    spool.close()


def test_a_write_also_forgets_what_was_acknowledged_in_the_same_transaction(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool.sqlite3")
    # More rows than one statement takes, both ways.
    first = [result(f"job-{i}") for i in range(ROWS_PER_STATEMENT + 7)]
    spool.add(first)
    later = [result(f"later-{i}") for i in range(3)]
    spool.add(later, forget=[outcome_key(o) for o in first[1:]])
    assert spool.pending() == [first[0], *later]
    spool.add([], forget=[outcome_key(first[0])])
    assert spool.pending() == later
    spool.remove([])  # nothing to do, and no error
    spool.close()


def test_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    first = Spool(path)
    first.add([result("job-1")])
    first.close()
    assert Spool(path).pending() == [result("job-1")]


def test_a_kill_9_right_after_add_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_spool import result
        from openbeepboop_node.spool import Spool
        spool = Spool(__import__("pathlib").Path({str(path)!r}))
        spool.add([result("job-{{}}".format(i)) for i in range(50)])
        print("finished", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == "finished"
    assert len(Spool(path).pending()) == 50


def test_spool_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "spool.sqlite3"
    Spool(path).close()
    assert (os.stat(path.parent).st_mode & 0o077) == 0
