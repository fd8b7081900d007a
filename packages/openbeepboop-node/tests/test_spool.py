"""The result spool: durable before delivery, gone after the ack, kill -9 safe."""

from __future__ import annotations

import contextlib
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
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'outcomes'"
        ).fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    data = bytearray(path.read_bytes())
    start = (root - 1) * page_size
    data[start : start + page_size] = bytes(page_size)  # the outcomes table's root page zeroed
    path.write_bytes(bytes(data))
    with pytest.raises(SpoolError, match=r"cannot read the result spool .*\.recover"):
        Spool(path).pending()


def huge_result(job_id: str, size: int) -> ResultOutcome:
    outcome = result(job_id)
    outcome.result.choices[0].message.content = "x" * size
    return outcome


def spool_files(path: Path) -> list[Path]:
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_the_spool_and_its_wal_files_are_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # what most shells give: files readable by everyone
    try:
        path = tmp_path / "spool.sqlite3"
        spool = Spool(path)
        spool.add([result("job-1")])  # the -wal and -shm files exist now
        files = spool_files(path)
        assert len(files) == 3
        assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {
            p.name: "0o600" for p in files
        }
        spool.close()
        # A spool left readable by an older node is made private when opened.
        for p in spool_files(path):
            p.chmod(0o644)
        Spool(path).close()
        assert {oct(p.stat().st_mode & 0o777) for p in spool_files(path)} == {"0o600"}
    finally:
        os.umask(old_umask)


def test_an_emptied_spool_gives_its_space_back(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    spool = Spool(path)
    big = huge_result("job-1", 8_000_000)
    spool.add([big])
    assert path.stat().st_size + Path(f"{path}-wal").stat().st_size > 8_000_000
    spool.remove([outcome_key(big)])  # the deletion that comes once nothing is left to send
    assert len(spool) == 0
    assert sum(p.stat().st_size for p in spool_files(path)) < 1_000_000
    spool.close()


def test_a_spool_made_before_it_could_shrink_is_converted_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:  # as an older node made it
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE outcomes (job_id TEXT NOT NULL, lease_token TEXT NOT NULL, "
            "body TEXT NOT NULL, spooled_at REAL NOT NULL, PRIMARY KEY (job_id, lease_token))"
        )
        kept = result("job-1")
        db.execute(
            "INSERT INTO outcomes VALUES (?, ?, ?, 1.0)",
            (kept.job_id, kept.lease_token, kept.model_dump_json()),
        )
        db.commit()
    spool = Spool(path)
    assert spool.pending() == [result("job-1")]  # what it held is kept
    big = huge_result("job-2", 8_000_000)
    spool.add([big])
    spool.remove([outcome_key(big)])
    assert sum(p.stat().st_size for p in spool_files(path)) < 1_000_000
    assert spool.pending() == [result("job-1")]
    spool.close()
