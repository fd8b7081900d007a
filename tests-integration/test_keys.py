"""USER keys are isolated from each other; a revoked key stops working at once.

See docs/server-internals.md, 'Ownership' and 'API keys'.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from cluster import Cluster, parse_json_output
from conftest import Shared
from openbeepboop_schemas import CHAT_COMPLETIONS_PATH, FETCH_PATH, JOBS_PATH
from openbeepboop_testkit.processes import wait_until

#: A parked fetch's wait: far longer than a revoke may take to end it.
FETCH_WAIT_SECONDS = 30
#: How soon a parked fetch must end after the revoke: the server re-checks
#: its parked long-polls' keys every second; the rest is a loaded machine.
REVOKE_SEEN_WITHIN = 10.0


def test_two_users_cannot_see_each_others_jobs(cluster: Cluster, shared: Shared, tag: str) -> None:
    server = shared.server
    alice = cluster.api(server, server.create_key("USER", f"{tag}-alice"))
    bob_key = server.create_key("USER", f"{tag}-bob")
    bob = cluster.api(server, bob_key)
    job_id = alice.submit("alice's secret", f"{tag}-m")
    unknown = "job-doesnotexist0000000000"

    assert alice.get(job_id).status_code == 200
    for probe in (job_id, unknown):
        response = bob.get(probe)
        assert response.status_code == 404, response.text
        assert "error" in response.json()
        assert bob.cancel(probe).status_code == 404
    [seen, never] = bob.poll([job_id, unknown])
    assert seen["status"] == never["status"] == "NOT_FOUND"
    assert seen["result"] is None and seen.get("model") is None
    listing = bob.http.get(JOBS_PATH)
    assert listing.status_code == 200
    assert job_id not in {entry["id"] for entry in listing.json()["data"]}
    assert alice.entry(job_id)["status"] == "QUEUED"  # bob's cancel did nothing

    # The CLI says the same thing to bob.
    config = cluster.client_config(server, bob_key, "bob")
    out = cluster.client("poll", job_id, "--config", str(config), check=False)
    if out.returncode == 0:
        assert parse_json_output(out.stdout)[0]["status"] == "NOT_FOUND"
    else:
        assert "Traceback" not in out.stderr and out.stderr.strip()


def test_revoked_key_stops_working_at_once(cluster: Cluster, shared: Shared, tag: str) -> None:
    server, name = shared.server, f"{tag}-leaver"
    key = server.create_key("USER", name)
    api = cluster.api(server, key)
    job_id = api.submit("before revocation", f"{tag}-m")
    config = cluster.client_config(server, key, "leaver")

    server.cli("keys", "revoke", name)

    assert api.get(job_id).status_code == 401
    response = api.http.post(
        CHAT_COMPLETIONS_PATH, json={"model": "m", "messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 401
    assert response.json()["error"]["message"]
    out = cluster.client("submit", "after revocation", "--config", str(config), check=False)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    listed = server.cli("keys", "list").stdout
    assert name in listed and key not in listed


def test_a_revoked_node_keys_parked_fetch_ends_and_strands_no_job(shared: Shared, tag: str) -> None:
    """The CLI (another process: no notice reaches a SQLite server) revokes a NODE
    key whose fetch is parked: the fetch ends with 401 and takes nothing, and the next
    job goes to another node's fetch instead of sitting leased to a node that can no
    longer deliver (docs/server-internals.md, 'API keys')."""
    server, model = shared.server, f"{tag}-m"
    leaver = server.create_key("NODE", f"{tag}-leaver")
    user = shared.cluster.api(server, shared.user_key)

    def fetch(key: str, node_id: str) -> httpx.Response:
        body = {"node_id": node_id, "models": [model], "wait": FETCH_WAIT_SECONDS}
        return httpx.post(
            f"{server.url}{FETCH_PATH}",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=FETCH_WAIT_SECONDS + 30,
        )

    with ThreadPoolExecutor(2) as pool:
        parked_before = server.long_polls("fetch")
        revoked_fetch = pool.submit(fetch, leaver, f"{tag}-leaver")
        wait_until(lambda: server.long_polls("fetch") > parked_before, 60, "the fetch to park")
        server.cli("keys", "revoke", f"{tag}-leaver")
        revoked_at = time.monotonic()
        refused = revoked_fetch.result(timeout=FETCH_WAIT_SECONDS + 30)
        assert time.monotonic() - revoked_at < REVOKE_SEEN_WITHIN, "the fetch outlived its key"
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "invalid_api_key"

        parked_before = server.long_polls("fetch")
        other_fetch = pool.submit(fetch, shared.node_key, f"{tag}-other")
        wait_until(
            lambda: server.long_polls("fetch") > parked_before, 60, "the other fetch to park"
        )
        job_id = user.submit("after the revoke", model)
        taken = other_fetch.result(timeout=FETCH_WAIT_SECONDS + 30)
    assert taken.status_code == 200, taken.text
    assert [lease["job_id"] for lease in taken.json()] == [job_id]
