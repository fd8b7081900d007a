"""A node heard from in time keeps its lease while the server's SQLite writer is busy.

See docs/server-internals.md, "Leases": a heartbeat or a result that has
arrived spares its lease from the reaper until it is written, however long it
waits for the writer.
"""

from __future__ import annotations

import sqlite3
import time

from cluster import Cluster
from openbeepboop_testkit.processes import wait_until
from openbeepboop_testkit.standin import StandinLLM

#: Short, so that holding the writer for two of them stays quick.
LEASE_SECONDS = 3.0
#: The reaper looks every tenth of a second: it is the first to queue for the writer.
REAP_INTERVAL_SECONDS = 0.1
#: The stand-in's answer comes well inside the lease.
LLM_DELAY_SECONDS = 1.0


def test_a_result_that_arrived_in_time_is_kept_while_the_writer_is_busy(
    cluster: Cluster, llm: StandinLLM
) -> None:
    server = cluster.server(
        lease_seconds=LEASE_SECONDS, reap_interval_seconds=REAP_INTERVAL_SECONDS
    )
    server_proc = server.start()
    node_key = server.create_key("NODE", "node")
    api = cluster.api(server, server.create_key("USER", "user"))
    node = cluster.node(server, node_key, "node-1", "m", "openai/m", llm.base_url, 1).run()
    llm.configure(delay=LLM_DELAY_SECONDS)
    prompt = "keep me while the writer is busy"
    job_id = api.submit(prompt, "m")
    wait_until(lambda: llm.calls_for(prompt), 60, "the node's LLM call")

    # Another process takes the database's write lock (as a long write would)
    # while the node's call runs, and holds it until the lease has run out twice
    # over: the node's result and heartbeats arrive in time and wait, and so
    # does the reaper, which finds the lease past its end once it gets the lock.
    holder = sqlite3.connect(server.database, isolation_level=None)
    try:
        (expires_at,) = holder.execute(
            "SELECT lease_expires_at FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        holder.execute("BEGIN IMMEDIATE")
        wait_until(
            lambda: time.time() > expires_at + LEASE_SECONDS,
            60,
            "the lease to run out while the writer is held",
        )
        holder.execute("ROLLBACK")
    finally:
        holder.close()

    entry = api.wait_for_status(job_id, {"COMPLETED", "FAILED"})
    assert entry["status"] == "COMPLETED", entry
    assert entry["attempts"] == 1, entry
    assert entry["result"]["choices"][0]["message"]["content"] == f"Echo: {prompt}"
    assert len(llm.calls_for(prompt)) == 1
    assert "lease(s) expired" not in server_proc.log_text()
    assert "not kept" not in node.log_text()
