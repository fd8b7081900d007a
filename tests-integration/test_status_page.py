"""The status page in a real browser: Playwright driving Debian's Chromium against a cluster.

A server, a node on the stand-in LLM and the page at ``/status``: without a key
it shows no data, a USER key is refused on the page, a METRICS key shows the
node, the model and its queue depth, which rises while the node is stopped and
jobs are submitted, and falls back once the node is back and completes them.

Chromium comes from Debian (``apt-get install -y chromium``, done here when it
is missing and we are root); Playwright's own browser download is never used.
Without a Chromium the test skips with the reason, except under ``CI=true``,
where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster
from openbeepboop_schemas import STATUS_PAGE_PATH
from openbeepboop_testkit.standin import StandinLLM

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: The page refreshes every 5 s and the server shares a status for 2 s: a change
#: shows within ~7 s; the deadline is generous for a loaded two-core machine.
PAGE_TIMEOUT_MS = 90_000
APT_TIMEOUT = 900


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the browser test cannot run under CI: {reason}")
    pytest.skip(reason)


def _ensure_chromium() -> Path:
    """Debian's Chromium, installed with apt-get when missing (as CI does, being root)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        _unavailable(f"{CHROMIUM} is missing and apt-get cannot install it here (not root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            _unavailable(f"`{' '.join(argv)}` failed: {' '.join(tail)}")
    if not CHROMIUM.exists():
        _unavailable(f"apt-get installed chromium but {CHROMIUM} is still missing")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium under Playwright (the Python package from requirements.txt)."""
    executable = _ensure_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (tests-integration/requirements.txt)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def test_the_status_page_follows_the_queue(
    cluster: Cluster, llm: StandinLLM, tag: str, browser: Any
) -> None:
    from playwright.sync_api import expect

    server = cluster.server()
    server.start()
    node_key = server.create_key("NODE", f"{tag}-node")
    user_key = server.create_key("USER", f"{tag}-user")
    metrics_key = server.create_key("METRICS", f"{tag}-dashboard")
    model, node_id = f"{tag}-model", f"{tag}-gpu"
    node = cluster.node(server, node_key, node_id, model, "openai/up", llm.base_url, 1)
    node.run()
    server.wait_for_nodes([node_id])
    api = cluster.api(server, user_key)

    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    expect.set_options(timeout=PAGE_TIMEOUT_MS)  # expect's own default is 5 s

    # No key: the page asks for one and shows nothing.
    response = page.goto(server.url + STATUS_PAGE_PATH)
    assert response is not None and response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator("#key-form")).to_be_visible()
    expect(page.locator("#data")).to_be_hidden()
    assert node_id not in page.content() and model not in page.content()

    # A USER key is refused with a message, and still no data.
    page.fill("#key-input", user_key)
    page.click("#key-submit")
    expect(page.locator("#message")).to_contain_text("ADMIN or METRICS")
    expect(page.locator("#key-form")).to_be_visible()
    expect(page.locator("#data")).to_be_hidden()
    assert node_id not in page.content()

    # The METRICS key: the node, its model, an empty queue.
    page.fill("#key-input", metrics_key)
    page.click("#key-submit")
    node_row = page.locator(f'#nodes tr[data-node="{node_id}"]')
    expect(node_row.locator("td.models")).to_have_text(model)
    expect(node_row.locator("td.key")).to_have_text(f"{tag}-node")
    model_row = page.locator(f'#models tr[data-model="{model}"]')
    expect(model_row.locator("td.queued")).to_have_text("0")
    expect(model_row.locator("td.nodes")).to_have_text("1")
    assert page.evaluate("Object.keys(window.sessionStorage)") == ["openbeepboop.status.key"]
    assert metrics_key not in page.url

    # The node stops serving: submitted jobs wait, and the page says how many.
    node.stop()
    ids = [api.submit(f"status page job {i}", model) for i in range(3)]
    expect(model_row.locator("td.queued")).to_have_text("3")
    expect(page.locator("#sum-queued")).to_have_text("3")
    expect(model_row.locator("td.oldest")).not_to_have_text("-")

    # It comes back: the jobs complete and the depth falls to nothing.
    node.run()
    done = api.wait_terminal(ids)
    assert {entry["status"] for entry in done.values()} == {"COMPLETED"}
    expect(model_row.locator("td.queued")).to_have_text("0")
    expect(model_row.locator("td.completed")).to_have_text("3")
    expect(page.locator(f'#keys tr[data-key="{tag}-user"] td.completed')).to_have_text("3")
    assert "status page job" not in page.content()  # prompts never reach the page

    # Another tab (a new browser context) knows no key: it asks again.
    other = browser.new_context().new_page()
    other.goto(server.url + STATUS_PAGE_PATH)
    expect(other.locator("#key-form")).to_be_visible()
    expect(other.locator("#data")).to_be_hidden()
    other.context.close()

    # Forgetting the key clears the data from the page.
    page.click("#forget")
    expect(page.locator("#data")).to_be_hidden()
    expect(page.locator(f'#models tr[data-model="{model}"]')).to_have_count(0)
    context.close()
    assert problems == []
