"""submit-file holds one bulk chunk at a time, whatever the size of the file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import API_KEY
from openbeepboop._config import write_config_file
from openbeepboop._constants import MAX_BULK_BODY_BYTES
from peak_rss import HAS_PROC, client_peak_rss
from restartable_server import RestartableServer

#: Size of the large input file: about four bulk chunks. Holding the whole file
#: (its lines parsed, validated and encoded) took 130 MB more than one line.
LARGE_FILE_BYTES = 4 * MAX_BULK_BODY_BYTES
#: How much more memory the large file may take than a file of one line: one
#: chunk is held at once as parsed lines, as JSON text and as the encoded body
#: (about 45 MB for 8 MB chunks), never a share of the file.
MAX_EXTRA_PEAK_BYTES = 10 * MAX_BULK_BODY_BYTES
#: Each request's prompt: 2 KB, so the file is read in a few seconds.
PROMPT = "x" * 2000


@pytest.fixture
def stand_in() -> Iterator[RestartableServer]:
    made = RestartableServer()
    yield made
    made.stop()


def write_input(path: Path, size: int) -> int:
    """An OpenAI Batch input file of at least ``size`` bytes (one line at least); its lines."""
    written = lines = 0
    with path.open("w") as handle:
        while lines == 0 or written < size:
            body = {"model": "m", "messages": [{"role": "user", "content": f"{lines} {PROMPT}"}]}
            line = {"custom_id": f"r{lines}", "method": "POST", "url": "/v1/chat/completions"}
            written += handle.write(json.dumps({**line, "body": body}) + "\n")
            lines += 1
    return lines


def submit_file_peak_rss(tmp_path: Path, config: Path, source: Path) -> int:
    """Run `openbeepboop-client submit-file` in its own process; its peak RSS in bytes."""
    peak = tmp_path / f"{source.stem}.peak"
    return client_peak_rss(peak, "submit-file", str(source), "--config", str(config))


@pytest.mark.skipif(not HAS_PROC, reason="reads Linux's /proc")
def test_submit_file_memory_does_not_grow_with_the_file(
    tmp_path: Path, stand_in: RestartableServer
) -> None:
    config = tmp_path / "client_config.toml"
    write_config_file(config, {"server_url": stand_in.url, "api_key": API_KEY})
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    write_input(small, 1)
    lines = write_input(large, LARGE_FILE_BYTES)

    baseline = submit_file_peak_rss(tmp_path, config, small)
    peak = submit_file_peak_rss(tmp_path, config, large)

    assert stand_in.submitted == 1 + lines
    assert len((tmp_path / "large.ids.jsonl").read_text().splitlines()) == lines
    extra = peak - baseline
    assert extra < MAX_EXTRA_PEAK_BYTES, (
        f"a {LARGE_FILE_BYTES / 1e6:.0f} MB file took {extra / 1e6:.0f} MB more "
        f"than a one-line file ({peak / 1e6:.0f} MB peak)"
    )
