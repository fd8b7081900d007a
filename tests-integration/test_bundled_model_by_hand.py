"""docs/quickstart.md's "Running the bundled model yourself", run as written.

The launch line is read out of the document (the venv's python and port 8080
become this interpreter and a free port, as a user with 8080 taken would
do): it must serve the model under the name the README's node setup maps
``smollm2`` to, print where, and stop cleanly on SIGTERM as the page says.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
from pathlib import Path

import httpx
import pytest
from openbeepboop_testkit.llamacpp import MODEL_NAME, llamacpp_available
from openbeepboop_testkit.processes import ProcessSet, free_port

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)


@pytest.fixture
def llamacpp_ready() -> None:
    """Skip where the model is not installed — but never in CI, where it must run."""
    reason = llamacpp_available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the bundled model must run in CI: {reason}")
        pytest.skip(f"real model unavailable: {reason}")


def documented_launch() -> list[str]:
    """The launcher line of the section, as argv."""
    text = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    section = text.split("## Running the bundled model yourself", 1)[1]
    block = FENCE.search(section)
    assert block is not None
    (line,) = [
        line for line in block.group(1).splitlines() if "openbeepboop_testkit.llamacpp" in line
    ]
    return shlex.split(line, comments=True)


@pytest.mark.usefixtures("llamacpp_ready")
def test_documented_launcher_serves_the_model_the_readme_names(procs: ProcessSet) -> None:
    argv = documented_launch()
    assert argv[0] == ".venv/bin/python" and argv[argv.index("--port") + 1] == "8080"
    port = free_port()
    argv[0], argv[argv.index("--port") + 1] = sys.executable, str(port)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"--litellm-model openai/{MODEL_NAME}" in readme

    model = procs.start("llamacpp", argv)
    base = f"http://127.0.0.1:{port}"
    model.wait_for_url(f"{base}/health")
    model.wait_for_log(f"at {base}/v1")
    listed = httpx.get(f"{base}/v1/models", timeout=30).json()
    names = {entry.get("id") for entry in listed.get("data", [])}
    assert MODEL_NAME in names, listed

    model.signal(signal.SIGTERM)
    assert model.wait() == 0
