"""`results` writes its output file a line at a time, not as one text built in memory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import API_KEY
from openbeepboop._config import write_config_file
from peak_rss import HAS_PROC, client_peak_rss
from restartable_server import RestartableServer

#: Jobs in the large id map, and what each one answered: 20 MB of results.
JOBS = 2_000
ANSWER = "x" * 10_000
#: How much more memory the large id map may take than a map of one job. The
#: answers are held once, as the poll returned them (~63 MB more for these);
#: building every output line, then its text, then the whole file's text as
#: well took 116 MB more.
MAX_EXTRA_PEAK_BYTES = 85 * 1024 * 1024


@pytest.fixture
def completed() -> Iterator[RestartableServer]:
    made = RestartableServer(status="COMPLETED", answer=ANSWER)
    yield made
    made.stop()


def write_ids(path: Path, jobs: int) -> None:
    with path.open("w") as handle:
        for number in range(jobs):
            handle.write(json.dumps({"custom_id": f"r{number}", "job_id": f"job-{number}"}) + "\n")


def results_peak_rss(tmp_path: Path, config: Path, ids: Path) -> int:
    peak = tmp_path / f"{ids.stem}.peak"
    return client_peak_rss(peak, "results", str(ids), "--config", str(config))


@pytest.mark.skipif(not HAS_PROC, reason="reads Linux's /proc")
def test_results_memory_holds_the_answers_once(
    tmp_path: Path, completed: RestartableServer
) -> None:
    config = tmp_path / "client_config.toml"
    write_config_file(config, {"server_url": completed.url, "api_key": API_KEY})
    small, large = tmp_path / "small.ids.jsonl", tmp_path / "large.ids.jsonl"
    write_ids(small, 1)
    write_ids(large, JOBS)

    baseline = results_peak_rss(tmp_path, config, small)
    peak = results_peak_rss(tmp_path, config, large)

    output = (tmp_path / "large.results.jsonl").read_text().splitlines()
    assert len(output) == JOBS
    assert json.loads(output[-1])["response"]["body"]["choices"][0]["message"]["content"] == ANSWER
    extra = peak - baseline
    print(f"peak {peak / 1e6:.0f} MB, {extra / 1e6:.0f} MB over one job")
    assert extra < MAX_EXTRA_PEAK_BYTES, (
        f"{JOBS} results of {len(ANSWER)} characters took {extra / 1e6:.0f} MB more "
        f"than one ({peak / 1e6:.0f} MB peak)"
    )
