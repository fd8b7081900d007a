"""The result spool: durable before delivery, gone after the ack, kill -9 safe."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from openbeepboop_node.exceptions import SpoolError
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


def test_an_unreadable_row_is_moved_aside_and_the_rest_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.sqlite3"
    spool = Spool(path)
    spool.add([result("job-1"), result("job-3")])
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO outcomes VALUES ('job-2', 'tok-2', '{not json', 0), "
            '(\'job-4\', \'tok-4\', \'{"kind": "result", "job_id": "job-4"}\', 0)'
        )
    with caplog.at_level(logging.ERROR, logger="openbeepboop_node"):
        assert sorted(o.job_id for o in spool.pending()) == ["job-1", "job-3"]
    assert spool.quarantined == 2 and spool.quarantine_size() == 2
    assert len(spool) == 2
    assert caplog.text.count("moved aside") == 1  # logged once, not per row
    with sqlite3.connect(path) as db:
        kept = db.execute("SELECT job_id, body, reason FROM quarantine ORDER BY job_id").fetchall()
    assert [row[:2] for row in kept] == [
        ("job-2", "{not json"),
        ("job-4", '{"kind": "result", "job_id": "job-4"}'),
    ]
    assert all(reason for _, _, reason in kept)
    # The next start finds only good rows.
    assert sorted(o.job_id for o in spool.pending()) == ["job-1", "job-3"]
    assert spool.quarantined == 2
    spool.close()


def test_a_damaged_spool_is_one_clear_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    spool = Spool(path)
    spool.add([result(f"job-{n:04d}-" + "x" * 100) for n in range(200)])  # pages of rows
    spool.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[4096:8192] = bytes(4096)  # one page of the outcomes table zeroed
    path.write_bytes(bytes(data))
    with pytest.raises(SpoolError, match=r"cannot read the result spool .*\.recover"):
        Spool(path).pending()
