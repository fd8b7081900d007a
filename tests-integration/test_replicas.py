"""Several ``openbeepboop-server`` replicas on one PostgreSQL database (docs/server.md,
'Scaling out with PostgreSQL').

A replica is a second ``start`` of the same config on another port; nodes and
clients may talk to any of them. These tests prove the queue stays exact
across replicas: each job runs once whichever replica takes it, and a
change made through one replica wakes the long-polls waiting on another.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from cluster import Cluster, Node, Server
from openbeepboop_schemas import FETCH_PATH, LEASE_WATCH_PATH, QUEUE_SUBMIT_PATH, ResultOutcome
from openbeepboop_testkit.processes import wait_until
from openbeepboop_testkit.standin import StandinLLM

#: Jobs per scale-out run, half submitted through each replica.
JOBS = 1000
#: Short leases, so the jobs a killed replica's node held come back soon.
LEASE_SECONDS = 6.0


def _node(
    cluster: Cluster, server: Server, key: str, name: str, llm: StandinLLM, *also: Server
) -> Node:
    """A node with its own provider key (``sk-<name>``), so the LLM log says who ran what;
    ``also``: more replicas it may fail over to (``--server-url``, docs/node.md)."""
    more = [arg for other in also for arg in ("--server-url", other.url)]
    return cluster.node(
        server,
        key,
        name,
        "m",
        "openai/m",
        llm.base_url,
        concurrency=8,
        provider_key=f"sk-{name}",
        more=more,
    )


def test_1000_jobs_through_two_replicas_each_prompt_reaches_an_llm_once(
    cluster: Cluster, postgres_url: str, llm: StandinLLM
) -> None:
    a = cluster.server(database_url=postgres_url, lease_seconds=LEASE_SECONDS)
    b = cluster.replica(a)
    a.start()
    b.start()
    node_key = a.create_key("NODE", "node")
    user_key = b.create_key("USER", "user")
    nodes = [_node(cluster, a, node_key, "node-a", llm), _node(cluster, b, node_key, "node-b", llm)]
    for node in nodes:
        node.run()
    a.wait_for_nodes(["node-a", "node-b"])

    prompts = [f"replicated prompt #{i}" for i in range(JOBS)]
    api_a, api_b = cluster.api(a, user_key), cluster.api(b, user_key)
    ids = api_a.submit_many(prompts[: JOBS // 2], "m") + api_b.submit_many(
        prompts[JOBS // 2 :], "m"
    )
    done = api_a.wait_terminal(ids[: JOBS // 2]) | api_b.wait_terminal(ids[JOBS // 2 :])

    assert {entry["status"] for entry in done.values()} == {"COMPLETED"}
    assert llm.prompt_counts() == dict.fromkeys(prompts, 1)
    for job_id, prompt in zip(ids, prompts, strict=True):
        assert done[job_id]["result"]["choices"][0]["message"]["content"] == f"Echo: {prompt}"
        assert done[job_id]["attempts"] == 1
    # Both replicas' nodes did some of the work.
    assert {call.api_key for call in llm.calls()} == {"sk-node-a", "sk-node-b"}


def test_a_replica_killed_mid_run_loses_nothing_and_the_other_finishes_the_run(
    cluster: Cluster, postgres_url: str, llm: StandinLLM
) -> None:
    a = cluster.server(database_url=postgres_url, lease_seconds=LEASE_SECONDS)
    b = cluster.replica(a)
    a.start()
    b.start()
    node_key = a.create_key("NODE", "node")
    user_key = b.create_key("USER", "user")
    # Each node starts on its own replica and knows the other (docs/node.md,
    # "Several server URLs"): when A dies, A's node moves to B.
    moving = _node(cluster, a, node_key, "node-a", llm, b)
    staying = _node(cluster, b, node_key, "node-b", llm, a)
    moving.run()
    staying.run()
    b.wait_for_nodes(["node-a", "node-b"])

    llm.configure(delay=0.02)
    prompts = [f"survive a replica #{i}" for i in range(JOBS)]
    api_b = cluster.api(b, user_key)
    ids = cluster.api(a, user_key).submit_many(prompts[: JOBS // 2], "m")
    ids += api_b.submit_many(prompts[JOBS // 2 :], "m")
    # Mid-run: both nodes are working, some jobs are done, most are not.
    wait_until(
        lambda: (
            {call.api_key for call in llm.answered_calls()} == {"sk-node-a", "sk-node-b"}
            and len(llm.answered_calls()) >= 50
        ),
        120,
        "both nodes to be working",
    )
    assert a.kill() == -9
    killed_at = time.time()
    done = api_b.wait_terminal(ids)

    assert {entry["status"] for entry in done.values()} == {"COMPLETED"}
    counts = llm.prompt_counts()
    assert set(counts) == set(prompts)
    # No live node ran a prompt twice; a prompt reached the LLM a second time
    # only if its first node lost the lease while moving to the survivor.
    for key in ("sk-node-a", "sk-node-b"):
        ran = [call.prompt for call in llm.calls() if call.api_key == key]
        assert len(ran) == len(set(ran)), key
    assert all(n <= 2 for n in counts.values())
    # The node that lost its replica kept working, through the other one.
    assert any(c.api_key == "sk-node-a" and c.timestamp > killed_at for c in llm.calls())
    assert moving.proc is not None and moving.proc.running()
    for job_id, prompt in zip(ids, prompts, strict=True):
        assert done[job_id]["result"]["choices"][0]["message"]["content"] == f"Echo: {prompt}"


#: The long-polls' periodic re-check, set far above what the tests allow, so only
#: a cross-replica notice can wake a long-poll in time.
LONG_RECHECK_SECONDS = 30.0
#: How soon a change on one replica must reach a long-poll waiting on another.
CROSS_REPLICA_LATENCY = 0.5


def _replica_pair(cluster: Cluster, postgres_url: str) -> tuple[Server, Server]:
    """Two started replicas on one fresh PostgreSQL database, re-check set long."""
    a = cluster.server(database_url=postgres_url)
    a.edit_config("server", recheck_seconds=LONG_RECHECK_SECONDS)
    b = cluster.replica(a)
    a.start()
    b.start()
    return a, b


def test_long_polls_on_one_replica_wake_at_once_for_changes_made_through_the_other(
    cluster: Cluster, postgres_url: str
) -> None:
    """Submit, delivery and cancel through one replica each end long-polls on the other;
    a key revoked through the CLI is refused by both at once.

    The test is the node here (the node protocol over HTTP), so what is timed
    is the servers alone, not an LLM call or LiteLLM's start-up.
    """
    a, b = _replica_pair(cluster, postgres_url)
    node_key = a.create_key("NODE", "node")
    user_key = a.create_key("USER", "user")
    api_a, api_b = cluster.api(a, user_key), cluster.api(b, user_key)
    node_b = httpx.Client(
        base_url=b.url, headers={"Authorization": f"Bearer {node_key}"}, timeout=60
    )
    fetch = {"node_id": "node-b", "models": ["m"], "max_jobs": 1, "wait": 25}

    with ThreadPoolExecutor(1) as pool, node_b:
        # A submit through A ends a fetch waiting on B.
        fetching = pool.submit(node_b.post, FETCH_PATH, json=fetch)
        wait_until(lambda: b.long_polls("fetch") >= 1, 60, "the fetch to wait on B")
        submitted_at = time.monotonic()
        job_id = api_a.submit("wake across replicas", "m")
        answer = fetching.result(timeout=60)
        assert time.monotonic() - submitted_at < CROSS_REPLICA_LATENCY
        assert answer.status_code == 200, answer.text
        (lease,) = answer.json()
        assert lease["job_id"] == job_id

        # A delivery through B ends a poll waiting on A.
        polling = pool.submit(api_a.poll, [job_id], 25.0)
        wait_until(lambda: a.long_polls("poll") >= 1, 60, "the poll to wait on A")
        delivered_at = time.monotonic()
        outcome = result_for(job_id, lease["lease_token"], "done on B")
        body = {"node_id": "node-b", "outcomes": [outcome.model_dump(mode="json")]}
        assert node_b.post(QUEUE_SUBMIT_PATH, json=body).status_code == 200
        (entry,) = polling.result(timeout=60)
        assert time.monotonic() - delivered_at < CROSS_REPLICA_LATENCY
        assert entry["status"] == "COMPLETED", entry
        assert entry["result"]["choices"][0]["message"]["content"] == "done on B"

        # A cancel through A ends, at once, a poll waiting on B and the lease
        # watch of the node running the job on B.
        second = api_a.submit("cancel across replicas", "m")
        claimed = node_b.post(FETCH_PATH, json={**fetch, "wait": 0})
        assert claimed.status_code == 200, claimed.text
        (held,) = claimed.json()
        watch = {
            "node_id": "node-b",
            "leases": [{"job_id": second, "lease_token": held["lease_token"]}],
            "wait": 25,
        }
        with ThreadPoolExecutor(1) as watcher:
            watching = watcher.submit(node_b.post, LEASE_WATCH_PATH, json=watch)
            polling = pool.submit(api_b.poll, [second], 25.0)
            wait_until(
                lambda: b.long_polls("poll") >= 1 and b.long_polls("lease_watch") >= 1,
                60,
                "the poll and the lease watch to wait on B",
            )
            cancelled_at = time.monotonic()
            assert api_a.cancel(second).status_code == 200
            (entry,) = polling.result(timeout=60)
            watched = watching.result(timeout=60)
            assert time.monotonic() - cancelled_at < CROSS_REPLICA_LATENCY
        assert entry["status"] == "CANCELLED", entry
        assert watched.status_code == 200, watched.text
        assert watched.json()["cancelled"] == [second]

    # Both replicas have served the user key (and keep it in memory); revoked
    # through the CLI, it is refused by each at once (docs/server-internals.md, "API keys").
    a.cli("keys", "revoke", "user")
    for server in (a, b):
        refused = httpx.get(
            f"{server.url}/v1/jobs", headers={"Authorization": f"Bearer {user_key}"}, timeout=30
        )
        assert refused.status_code == 401, (server.url, refused.text)


def result_for(job_id: str, lease_token: str, text: str) -> ResultOutcome:
    """A node's result for a lease, as the node protocol carries it."""
    return ResultOutcome.model_validate(
        {
            "job_id": job_id,
            "lease_token": lease_token,
            "result": {
                "id": f"chatcmpl-{job_id}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
            },
        }
    )


#: Long enough that the lease of the node that dies outlives the replica's restarts.
LONG_LEASE_SECONDS = 600.0


def _lease_expiry(postgres_url: str, job_id: str) -> float:
    """The job's lease expiry as stored (the API does not show it)."""
    import psycopg

    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        row = conn.execute("SELECT lease_expires_at FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None and row[0] is not None
    return float(row[0])


def test_a_replica_restarted_beside_a_live_one_leaves_a_dead_nodes_lease_as_it_was(
    cluster: Cluster, postgres_url: str
) -> None:
    """QA round 11: every start of a crash-looping replica moved a dead node's leases a
    full period forward, so its jobs stayed PROCESSING as long as the loop went on.
    A replica starting beside a live one grants no restart grace (docs/server.md)."""
    a = cluster.server(database_url=postgres_url, lease_seconds=LONG_LEASE_SECONDS)
    b = cluster.replica(a)
    a.start()
    b.start()
    node_key = a.create_key("NODE", "node")
    job_id = cluster.api(a, a.create_key("USER", "user")).submit("held by a dead node", "m")
    with httpx.Client(
        base_url=a.url, headers={"Authorization": f"Bearer {node_key}"}, timeout=60
    ) as node:
        fetch = {"node_id": "dies", "models": ["m"], "max_jobs": 1, "wait": 0}
        claimed = node.post(FETCH_PATH, json=fetch)
    assert claimed.status_code == 200, claimed.text
    assert [lease["job_id"] for lease in claimed.json()] == [job_id]
    before = _lease_expiry(postgres_url, job_id)
    for _ in range(2):
        assert b.kill() == -9
        b.start()
    assert _lease_expiry(postgres_url, job_id) == before
