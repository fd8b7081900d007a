"""A database that cannot write for want of disk space says so: 503, nothing stored.

SQLite's own cap on the file (``PRAGMA max_page_count`` on the server's
writer connection) fails writes exactly as a full disk does
(``SQLITE_FULL``, "database or disk is full").
"""

from __future__ import annotations

from openbeepboop_schemas import Role
from openbeepboop_server.context import ServerContext
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.support.surface import bearer, chat


def test_a_submit_on_a_full_disk_is_a_503_that_says_the_disk_is_full(app: Starlette) -> None:
    with TestClient(app) as client:
        context: ServerContext = client.app.state.context  # type: ignore[attr-defined]
        key, _ = context.keys.create(Role.USER, "user")
        assert client.post("/v1/chat/completions", json=chat(), headers=bearer(key)).is_success
        writer = context.db._writer  # the one writer connection a SQLite file keeps
        assert writer is not None
        raw = writer.connection.driver_connection
        assert raw is not None
        pages = raw.execute("PRAGMA page_count").fetchone()[0]
        raw.execute(f"PRAGMA max_page_count = {pages}")

        big = chat(content="x" * 12_000)
        full = client.post("/v1/chat/completions", json=big, headers=bearer(key))
        assert full.status_code == 503, full.text
        error = full.json()["error"]
        assert error["code"] == "database_unavailable"
        assert "disk is full" in error["message"] and "nothing was stored" in error["message"]
        assert len(client.get("/v1/jobs", headers=bearer(key)).json()["data"]) == 1

        # Space is freed (the connection went back to the pool, its cap with it).
        raw.execute("PRAGMA max_page_count = 1073741823")
        assert client.post("/v1/chat/completions", json=big, headers=bearer(key)).status_code == 202
        assert len(client.get("/v1/jobs", headers=bearer(key)).json()["data"]) == 2
