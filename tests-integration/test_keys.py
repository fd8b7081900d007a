"""USER keys are isolated from each other; a revoked key stops working at once.

See docs/server-internals.md, "Ownership" and "API keys".
"""

from __future__ import annotations

from cluster import Cluster, parse_json_output
from conftest import Shared


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
    listing = bob.http.get("/v1/jobs")
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
        "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 401
    assert response.json()["error"]["message"]
    out = cluster.client("submit", "after revocation", "--config", str(config), check=False)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    listed = server.cli("keys", "list").stdout
    assert name in listed and key not in listed
