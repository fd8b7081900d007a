"""Revision 0006 (fair share and priorities) on a database with jobs queued before it."""

from __future__ import annotations

import sqlalchemy as sa
from openbeepboop_schemas import FetchRequest, Role
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.migrate import upgrade_to, upgrade_to_head
from openbeepboop_server.keys import Caller, KeyService
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService

REQUEST = '{"model": "llama3", "messages": [{"role": "user", "content": "x"}]}'


def test_jobs_queued_before_keep_their_order_and_keys_get_the_defaults(backend_url: str) -> None:
    upgrade_to(backend_url, "0004")
    engine = sa.create_engine(backend_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO api_keys (name, role, key_sha256, created_at) "
                "VALUES ('old-user', 'USER', :h, 1.0)"
            ),
            {"h": "ab" * 32},
        )
        for seq, created in ((1, 30.0), (2, 10.0), (3, 20.0)):
            conn.execute(
                sa.text(
                    "INSERT INTO jobs (seq, id, owner_key_id, model, status, request, attempts,"
                    " max_attempts, not_before, created_at, updated_at) VALUES (:seq, :id,"
                    " (SELECT id FROM api_keys WHERE name = 'old-user'),"
                    " 'llama3', 'QUEUED', :request, 0, 3, 0, :created, :created)"
                ),
                {
                    "seq": seq,
                    "id": f"job-old{seq}",
                    "created": created,
                    "request": REQUEST,
                },
            )
    engine.dispose()
    upgrade_to_head(backend_url)
    db = Database.connect(backend_url)
    try:
        with db.read() as conn:
            rows = conn.execute(sa.text("SELECT priority, claim_rank FROM jobs ORDER BY seq")).all()
            key = conn.execute(sa.text("SELECT weight, max_priority FROM api_keys")).one()
        assert [tuple(row) for row in rows] == [(0, 30.0), (0, 10.0), (0, 20.0)]
        assert tuple(key) == (1, 0)
        node_key, _ = KeyService(db).create(Role.NODE, "node")
        node = KeyService(db).authenticate(node_key)
        assert isinstance(node, Caller)
        queue = QueueService(db, QueuePolicy())
        fetch = FetchRequest(node_id="n", models=["llama3"], max_jobs=3)
        # One owner, priority 0: oldest first, as a FIFO queue of created_at.
        assert [lease.job_id for lease in queue.claim(node, fetch)] == [
            "job-old2",
            "job-old3",
            "job-old1",
        ]
    finally:
        db.dispose()
