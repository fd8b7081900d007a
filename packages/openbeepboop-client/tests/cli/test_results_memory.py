"""`results` takes memory bounded by one poll's answer, not by the number of jobs.

Each run is a process of its own, whose peak RSS is compared between an id
map and one four times its size: the answers are spooled to disk as they
arrive and the output is written from there a line at a time, so the larger
map must not take anywhere near four times the memory above a one-job run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import API_KEY
from openbeepboop._config import write_config_file
from peak_rss import HAS_PROC, client_peak_rss
from restartable_server import RestartableServer

#: Jobs in the smaller id map (four polls' worth); the larger holds four times as many.
JOBS = 4_000
#: What each job answered: 20 MB of results for the smaller map, 80 MB for the larger.
ANSWER = "x" * 5_000
#: How many times the smaller map's extra memory (above one job) the larger's
#: may be. Spooled, the extra memory is about one poll's answer, and the
#: larger map adds only a small record per job (1.3 to 1.4 here); with every
#: answer held until the output was written it grew with them (2.8 to 2.9).
MAX_GROWTH = 2.0


@pytest.fixture
def completed() -> Iterator[RestartableServer]:
    made = RestartableServer(status="COMPLETED", answer=ANSWER)
    yield made
    made.stop()


def write_ids(path: Path, jobs: int) -> None:
    with path.open("w") as handle:
        for number in range(jobs):
            handle.write(json.dumps({"custom_id": f"r{number}", "job_id": f"job-{number}"}) + "\n")


def results_peak_rss(tmp_path: Path, config: Path, ids: Path, *options: str) -> int:
    peak = tmp_path / f"{ids.stem}.peak"
    return client_peak_rss(peak, "results", str(ids), "--config", str(config), *options)


@pytest.mark.skipif(not HAS_PROC, reason="reads Linux's /proc")
@pytest.mark.parametrize("options", [(), ("--wait", "--no-progress")], ids=["poll", "wait"])
def test_results_memory_does_not_grow_with_the_jobs(
    tmp_path: Path, completed: RestartableServer, options: tuple[str, ...]
) -> None:
    config = tmp_path / "client_config.toml"
    write_config_file(config, {"server_url": completed.url, "api_key": API_KEY})
    one, small, large = (tmp_path / f"{name}.ids.jsonl" for name in ("one", "small", "large"))
    write_ids(one, 1)
    write_ids(small, JOBS)
    write_ids(large, 4 * JOBS)

    baseline = results_peak_rss(tmp_path, config, one, *options)
    small_extra = results_peak_rss(tmp_path, config, small, *options) - baseline
    large_extra = results_peak_rss(tmp_path, config, large, *options) - baseline

    output = (tmp_path / "large.results.jsonl").read_text().splitlines()
    assert len(output) == 4 * JOBS
    last = json.loads(output[-1])
    assert last["custom_id"] == f"r{4 * JOBS - 1}"
    assert last["response"]["body"]["choices"][0]["message"]["content"] == ANSWER
    growth = large_extra / small_extra
    print(f"{small_extra / 1e6:.0f} MB, then {large_extra / 1e6:.0f} MB over one job")
    assert growth < MAX_GROWTH, (
        f"{4 * JOBS} results took {large_extra / 1e6:.0f} MB more than one, "
        f"{growth:.1f} times what {JOBS} took ({small_extra / 1e6:.0f} MB)"
    )
