"""A database created by the first migration opens after ``migrate`` on the newest code."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from pathlib import Path

from alembic.script import ScriptDirectory
from cluster import SERVER, Cluster
from openbeepboop_server.db import migrate
from openbeepboop_testkit.processes import WaitTimeoutError


def first_revision() -> str:
    bases = ScriptDirectory.from_config(migrate.alembic_config()).get_bases()
    assert len(bases) == 1, bases
    return str(bases[0])


def seed_first_revision_database(path: Path) -> tuple[str, str]:
    """A database at the first revision with an ADMIN key and one queued job in it.

    Rows are written with the columns of revision 0001, which never changes.
    """
    url = f"sqlite:///{path}"
    migrate.upgrade_to(url, first_revision())
    assert migrate.pending_revisions(url), "the test needs a revision after the first"
    key = "sk-" + secrets.token_urlsafe(32)
    job_id = "job-" + secrets.token_hex(12)
    now = time.time()
    request = {"model": "m", "messages": [{"role": "user", "content": "from the old days"}]}
    with sqlite3.connect(path) as db:
        cursor = db.execute(
            "INSERT INTO api_keys (name, role, key_sha256, created_at) VALUES (?, ?, ?, ?)",
            ("old-admin", "ADMIN", hashlib.sha256(key.encode()).hexdigest(), now),
        )
        db.execute(
            "INSERT INTO jobs (id, owner_key_id, model, status, request, attempts, max_attempts,"
            " not_before, created_at, updated_at) VALUES (?, ?, ?, 'QUEUED', ?, 0, 3, 0, ?, ?)",
            (job_id, cursor.lastrowid, "m", json.dumps(request), now, now),
        )
    return key, job_id


def test_first_revision_database_upgrades_with_migrate(cluster: Cluster) -> None:
    server = cluster.server()
    old_db = server.dir / "old.db"
    key, job_id = seed_first_revision_database(old_db)
    server.edit_config("database", url=f"sqlite:///{old_db}")

    refused = cluster.procs.start(
        "server-behind", [SERVER, "start", "--config", str(server.config)]
    )
    try:
        code = refused.wait(timeout=90)
    except WaitTimeoutError:
        raise AssertionError("start did not refuse a database behind the code") from None
    log = refused.log_text()
    assert code != 0
    assert "migrate" in log and "Traceback" not in log, log

    server.cli("migrate")
    assert migrate.pending_revisions(f"sqlite:///{old_db}") == []
    server.start()

    api = cluster.api(server, key)
    response = api.get(job_id)
    assert response.status_code == 200, response.text
    entry = response.json()
    assert entry["id"] == job_id and entry["status"] == "QUEUED" and entry["model"] == "m"
    assert api.submit("a new job after the upgrade", "m").startswith("job-")
