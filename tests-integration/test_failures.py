"""Provider errors: permanent ones fail the job with the provider's message, transient retry."""

from __future__ import annotations

from cluster import Cluster
from conftest import Shared
from openbeepboop_testkit.standin import PERMANENT_ERROR_MESSAGE, StandinLLM


def test_permanent_failure_and_fail_once_then_succeed(
    cluster: Cluster, shared: Shared, llm: StandinLLM, tag: str
) -> None:
    llm.configure(fail_prompts=["POISON"], fail_first_n=1, flaky_marker="FLAKY")
    server, model = shared.server, f"{tag}-m"
    api = cluster.api(server, shared.user_key)
    cluster.node(server, shared.node_key, f"{tag}-node", model, "openai/m", llm.base_url).run()
    poison = api.submit("a POISON prompt", model)
    flaky = api.submit("a FLAKY prompt", model)
    fine = api.submit("a fine prompt", model)

    done = api.wait_terminal([poison, flaky, fine])

    failed = done[poison]
    assert failed["status"] == "FAILED", failed
    assert failed["completed"] is False and failed["result"] is None
    assert PERMANENT_ERROR_MESSAGE in failed["error"]["message"]
    assert failed["attempts"] == 1
    assert len(llm.calls_for("a POISON prompt")) == 1  # permanent: never retried

    recovered = done[flaky]
    assert recovered["status"] == "COMPLETED", recovered
    assert recovered["result"]["choices"][0]["message"]["content"] == "Echo: a FLAKY prompt"
    assert [call.status for call in llm.calls_for("a FLAKY prompt")] == [500, 200]
    assert recovered["attempts"] == 2

    assert done[fine]["status"] == "COMPLETED"
    assert done[fine]["attempts"] == 1
