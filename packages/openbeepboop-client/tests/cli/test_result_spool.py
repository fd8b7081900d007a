"""`results` spools the answers beside the output file, privately, and frees the spool however
it ends: written, timed out (124), interrupted (130) or failed (1)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx
import pytest
import respx
from conftest import Cli, assert_one_line_error, completion_body, entry_body
from openbeepboop.cli import result_spool


class Spools:
    """Every spool the command opened: where, its mode and links when made, and the handle."""

    def __init__(self) -> None:
        self.folders: list[Path] = []
        self.modes: list[int] = []
        self.links: list[int] = []
        self.handles: list[IO[bytes]] = []


@pytest.fixture
def spools(monkeypatch: pytest.MonkeyPatch) -> Spools:
    made = Spools()
    real = result_spool.TemporaryFile

    def recording(**options: object) -> IO[bytes]:
        handle = real(**options)  # type: ignore[call-overload]
        status = os.fstat(handle.fileno())
        made.folders.append(Path(str(options["dir"])))
        made.modes.append(stat.S_IMODE(status.st_mode))
        made.links.append(status.st_nlink)
        made.handles.append(handle)
        return handle

    monkeypatch.setattr(result_spool, "TemporaryFile", recording)
    return made


def ids_file(folder: Path, pairs: list[tuple[str, str]]) -> Path:
    path = folder / "p.ids.jsonl"
    path.write_text("".join(json.dumps({"custom_id": c, "job_id": j}) + "\n" for c, j in pairs))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def answers(*rounds: list[dict] | BaseException) -> Callable[[httpx.Request], httpx.Response]:
    """Poll answers, one a request, each the entries of the ids asked about (or an exception)."""
    left = list(rounds)

    def answer(request: httpx.Request) -> httpx.Response:
        entries = left.pop(0) if len(left) > 1 else left[0]
        if isinstance(entries, BaseException):
            raise entries
        asked = json.loads(request.content)["ids"]
        return httpx.Response(200, json=[e for e in entries if e["id"] in asked])

    return answer


def assert_freed(spools: Spools, folder: Path, files: set[str]) -> None:
    """One spool, made 0600 in ``folder`` without a name, closed now; nothing else left."""
    assert spools.folders == [folder]
    assert spools.modes == [0o600]
    assert spools.links == [0]  # never a name in the folder, even after a crash
    assert all(handle.closed for handle in spools.handles)
    assert {path.name for path in folder.iterdir()} == files


def test_the_spool_is_freed_after_writing_in_id_map_order(
    tmp_path: Path, cli: Cli, server: respx.MockRouter, spools: Spools
) -> None:
    ids = ids_file(tmp_path, [("a", "job-1"), ("b", "job-2"), ("c", "job-3")])
    out = tmp_path / "out" / "answers.jsonl"
    server.post("/v1/results/poll").mock(
        side_effect=answers(
            [
                entry_body("job-1", "QUEUED"),
                entry_body("job-2", "QUEUED"),
                entry_body("job-3", "COMPLETED", result=completion_body("C")),
            ],
            [entry_body("job-1", "QUEUED"), entry_body("job-2", "CANCELLED")],
            [entry_body("job-1", "COMPLETED", result=completion_body("A"))],
        )
    )
    result = cli("results", str(ids), "--wait", "--no-progress", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    lines = read_jsonl(out)
    assert [(line["custom_id"], line["id"]) for line in lines] == [
        ("a", "job-1"),
        ("b", "job-2"),
        ("c", "job-3"),
    ]
    assert lines[0]["response"]["body"] == completion_body("A")
    assert lines[1]["error"]["code"] == "cancelled"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert_freed(spools, out.parent, {"answers.jsonl"})


def test_the_spool_is_freed_after_results_without_wait(
    tmp_path: Path, cli: Cli, server: respx.MockRouter, spools: Spools
) -> None:
    ids = ids_file(tmp_path, [("a", "job-1"), ("b", "job-2")])
    server.post("/v1/results/poll").mock(
        side_effect=answers([entry_body("job-1", "COMPLETED"), entry_body("job-2", "RUNNING")])
    )
    result = cli("results", str(ids))
    assert result.exit_code == 0, result.stderr
    assert [line["custom_id"] for line in read_jsonl(tmp_path / "p.results.jsonl")] == ["a"]
    assert_freed(spools, tmp_path, {"p.ids.jsonl", "p.results.jsonl", "client_config.toml"})


def test_the_spool_is_freed_after_a_timeout(
    tmp_path: Path, cli: Cli, server: respx.MockRouter, spools: Spools
) -> None:
    ids = ids_file(tmp_path, [("a", "job-1"), ("b", "job-2")])
    server.post("/v1/results/poll").mock(
        side_effect=answers([entry_body("job-1", "COMPLETED"), entry_body("job-2", "QUEUED")])
    )
    result = cli("wait", str(ids), "--timeout", "0.05", "--no-progress")
    assert_one_line_error(result, "job-2 is still QUEUED")
    assert result.exit_code == 124
    assert [line["custom_id"] for line in read_jsonl(tmp_path / "p.results.jsonl")] == ["a"]
    assert_freed(spools, tmp_path, {"p.ids.jsonl", "p.results.jsonl", "client_config.toml"})


def test_the_spool_is_freed_after_ctrl_c(
    tmp_path: Path, cli: Cli, server: respx.MockRouter, spools: Spools
) -> None:
    ids = ids_file(tmp_path, [("a", "job-1"), ("b", "job-2")])
    poll = server.post("/v1/results/poll").mock(
        side_effect=answers(
            [entry_body("job-1", "COMPLETED"), entry_body("job-2", "QUEUED")],
            KeyboardInterrupt(),
            [entry_body("job-2", "FAILED")],
        )
    )
    result = cli("wait", str(ids), "--no-progress")
    assert_one_line_error(result, "nothing was cancelled")
    assert result.exit_code == 130
    # The last look after Ctrl-C asks only about the job not collected yet.
    assert json.loads(poll.calls[-1].request.content)["ids"] == ["job-2"]
    lines = read_jsonl(tmp_path / "p.results.jsonl")
    assert [(line["custom_id"], line["response"] is None) for line in lines] == [
        ("a", False),
        ("b", True),
    ]
    assert_freed(spools, tmp_path, {"p.ids.jsonl", "p.results.jsonl", "client_config.toml"})


def test_the_spool_is_freed_after_an_error_and_the_output_is_left_alone(
    tmp_path: Path, cli: Cli, server: respx.MockRouter, spools: Spools
) -> None:
    ids = ids_file(tmp_path, [("a", "job-1"), ("b", "job-2")])
    out = tmp_path / "p.results.jsonl"
    out.write_text('{"custom_id": "from an earlier run"}\n')
    rejected = httpx.Response(401, json={"error": {"message": "bad key", "type": "auth"}})
    first = [entry_body("job-1", "COMPLETED"), entry_body("job-2", "QUEUED")]
    calls = iter([httpx.Response(200, json=first)])
    server.post("/v1/results/poll").mock(side_effect=lambda _: next(calls, rejected))
    result = cli("results", str(ids), "--wait", "--no-progress")
    assert result.exit_code == 1
    assert "bad key" in result.stderr
    assert out.read_text() == '{"custom_id": "from an earlier run"}\n'
    assert_freed(spools, tmp_path, {"p.ids.jsonl", "p.results.jsonl", "client_config.toml"})
