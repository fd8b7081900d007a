"""submit-file, results and wait: OpenAI Batch input in, OpenAI Batch output out."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import respx
from conftest import Cli, assert_one_line_error, completion_body, entry_body, error_body, job_body
from openbeepboop._batch_files import BatchRequest
from openbeepboop._resources import chat as chat_module
from openbeepboop.cli import batch as batch_module


def batch_line(custom_id: str, content: str, **body: object) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "llama3", "messages": [{"role": "user", "content": content}], **body},
    }


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    )
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class BulkServer:
    """Answers bulk submits with sequential job ids; records what was sent."""

    def __init__(self) -> None:
        self.requests: list[list[dict]] = []
        self.count = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        batch = json.loads(request.content)["requests"]
        self.requests.append(batch)
        data = []
        for item in batch:
            self.count += 1
            data.append(job_body(f"job-{self.count}", model=item["model"]))
        return httpx.Response(202, json={"object": "list", "data": data})


@pytest.fixture
def bulk(server: respx.MockRouter) -> BulkServer:
    fake = BulkServer()
    server.post("/v1/chat/completions/bulk").mock(side_effect=fake)
    return fake


def test_submit_file_writes_the_id_map(tmp_path: Path, cli: Cli, bulk: BulkServer) -> None:
    source = write_lines(
        tmp_path / "prompts.jsonl",
        [batch_line("a", "one", temperature=0.1), "", batch_line("b", "two", seed=3)],
    )
    result = cli("submit-file", str(source))
    assert result.exit_code == 0, result.stderr
    ids_path = tmp_path / "prompts.ids.jsonl"
    assert str(ids_path) in result.stdout
    assert read_jsonl(ids_path) == [
        {"custom_id": "a", "job_id": "job-1"},
        {"custom_id": "b", "job_id": "job-2"},
    ]
    # The bodies went through exactly, unknown OpenAI fields included.
    assert bulk.requests == [
        [batch_line("a", "one", temperature=0.1)["body"], batch_line("b", "two", seed=3)["body"]]
    ]


def test_submit_file_model_fallback_and_ids_out(tmp_path: Path, cli: Cli, bulk: BulkServer) -> None:
    line = batch_line("a", "one")
    del line["body"]["model"]
    source = write_lines(tmp_path / "in.jsonl", [line])
    out = tmp_path / "sub" / "map.jsonl"
    result = cli("submit-file", str(source), "--model", "qwen", "--ids-out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"submitted": 1, "ids_file": str(out)}
    assert bulk.requests[0][0]["model"] == "qwen"
    assert read_jsonl(out) == [{"custom_id": "a", "job_id": "job-1"}]


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps([1, 2]), "JSON object"),
        (json.dumps({**batch_line("x", "y"), "custom_id": ""}), "custom_id"),
        (json.dumps({**batch_line("x", "y"), "method": "GET"}), "'method'"),
        (json.dumps({**batch_line("x", "y"), "url": "/v1/embeddings"}), "'url'"),
        (json.dumps({**batch_line("x", "y"), "body": "text"}), "'body'"),
        (json.dumps(batch_line("x", "y", stream=True)), "stream"),
        (json.dumps(batch_line("a", "dup")), "already used on line 1"),
        (
            json.dumps({**batch_line("x", "y"), "body": {"model": "m", "messages": []}}),
            "'messages'",
        ),
    ],
)
def test_malformed_line_names_its_number_and_submits_nothing(
    tmp_path: Path, cli: Cli, server: respx.MockRouter, bad: str, fragment: str
) -> None:
    route = server.post("/v1/chat/completions/bulk").respond(202, json={"data": []})
    source = write_lines(tmp_path / "in.jsonl", [batch_line("a", "ok"), "", bad])
    result = cli("submit-file", str(source))
    assert_one_line_error(result, f"{source}:3:", fragment)
    assert not route.called
    assert not (tmp_path / "in.ids.jsonl").exists()


def test_empty_and_missing_files(tmp_path: Path, cli: Cli) -> None:
    empty = write_lines(tmp_path / "empty.jsonl", ["", "  "])
    assert_one_line_error(cli("submit-file", str(empty)), "no requests")
    missing = cli("submit-file", str(tmp_path / "missing.jsonl"))
    assert missing.exit_code != 0 and "Traceback" not in missing.stderr


def test_submit_file_will_not_overwrite_an_id_map(
    tmp_path: Path, cli: Cli, bulk: BulkServer
) -> None:
    source = write_lines(tmp_path / "p.jsonl", [batch_line("a", "one")])
    (tmp_path / "p.ids.jsonl").write_text('{"custom_id": "old", "job_id": "job-old"}\n')
    assert_one_line_error(cli("submit-file", str(source)), "already exists", "--force")
    assert bulk.requests == []
    assert cli("submit-file", str(source), "--force").exit_code == 0
    assert read_jsonl(tmp_path / "p.ids.jsonl") == [{"custom_id": "a", "job_id": "job-1"}]


def test_submit_file_partial_failure_keeps_the_ids_made(
    tmp_path: Path, cli: Cli, server: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_module, "MAX_BULK_SUBMIT", 2)
    server.post("/v1/chat/completions/bulk").mock(
        side_effect=[
            httpx.Response(202, json={"data": [job_body("job-1"), job_body("job-2")]}),
            httpx.Response(413, json=error_body("body too large")),
        ]
    )
    source = write_lines(tmp_path / "p.jsonl", [batch_line(c, c) for c in "abc"])
    result = cli("submit-file", str(source))
    assert_one_line_error(result, "2 of 3", "body too large", "p.ids.jsonl")
    assert read_jsonl(tmp_path / "p.ids.jsonl") == [
        {"custom_id": "a", "job_id": "job-1"},
        {"custom_id": "b", "job_id": "job-2"},
    ]


def ids_file(tmp_path: Path, pairs: list[tuple[str, str]]) -> Path:
    return write_lines(tmp_path / "p.ids.jsonl", [{"custom_id": c, "job_id": j} for c, j in pairs])


def test_results_in_openai_batch_output_format(
    tmp_path: Path, cli: Cli, server: respx.MockRouter
) -> None:
    ids = ids_file(
        tmp_path,
        [("a", "job-1"), ("b", "job-2"), ("c", "job-3"), ("d", "job-4"), ("e", "job-5")],
    )
    server.post("/v1/results/poll").respond(
        200,
        json=[
            entry_body("job-1", "COMPLETED", result=completion_body("A", system_fingerprint="x")),
            entry_body("job-2", "FAILED", error={"message": "bad model", "type": "invalid_model"}),
            entry_body("job-3", "CANCELLED"),
            entry_body("job-4", "PROCESSING"),
            entry_body("job-5", "NOT_FOUND"),
        ],
    )
    result = cli("results", str(ids))
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "p.results.jsonl"
    assert str(out) in result.stdout
    assert "1 jobs not finished" in result.stderr
    lines = read_jsonl(out)
    assert [line["custom_id"] for line in lines] == ["a", "b", "c", "e"]
    assert lines[0] == {
        "id": "job-1",
        "custom_id": "a",
        "response": {
            "status_code": 200,
            "request_id": "job-1",
            "body": completion_body("A", system_fingerprint="x"),
        },
        "error": None,
    }
    assert lines[1] == {
        "id": "job-2",
        "custom_id": "b",
        "response": None,
        "error": {"code": "invalid_model", "message": "bad model"},
    }
    assert lines[2]["error"]["code"] == "cancelled" and lines[2]["response"] is None
    assert lines[3]["error"]["code"] == "not_found"


def test_results_wait_with_output_path_and_json(
    tmp_path: Path, cli: Cli, server: respx.MockRouter
) -> None:
    ids = ids_file(tmp_path, [("a", "job-1"), ("b", "job-2")])
    poll = server.post("/v1/results/poll").mock(
        side_effect=[
            httpx.Response(
                200, json=[entry_body("job-1", "COMPLETED"), entry_body("job-2", "QUEUED")]
            ),
            httpx.Response(200, json=[entry_body("job-2", "COMPLETED")]),
        ]
    )
    out = tmp_path / "answers.jsonl"
    result = cli("results", str(ids), "--wait", "-o", str(out), "--json", "--no-progress")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "output": str(out),
        "written": 2,
        "counts": {"COMPLETED": 2},
        "pending": 0,
    }
    assert [line["custom_id"] for line in read_jsonl(out)] == ["a", "b"]
    assert all(json.loads(call.request.content)["wait"] > 0 for call in poll.calls)


def test_wait_command_shows_progress_when_asked(
    tmp_path: Path, cli: Cli, server: respx.MockRouter
) -> None:
    ids = ids_file(tmp_path, [("a", "job-1")])
    server.post("/v1/results/poll").respond(200, json=[entry_body("job-1", "COMPLETED")])
    result = cli("wait", str(ids), "--progress")
    assert result.exit_code == 0, result.stderr
    assert "1/1" in result.stderr
    assert read_jsonl(tmp_path / "p.results.jsonl")[0]["custom_id"] == "a"


def test_wait_timeout_writes_what_finished(
    tmp_path: Path, cli: Cli, server: respx.MockRouter
) -> None:
    ids = ids_file(tmp_path, [("a", "job-1"), ("b", "job-2")])
    status = {"job-1": "COMPLETED", "job-2": "QUEUED"}

    def answer(request: httpx.Request) -> httpx.Response:
        asked = json.loads(request.content)["ids"]
        return httpx.Response(200, json=[entry_body(job_id, status[job_id]) for job_id in asked])

    server.post("/v1/results/poll").mock(side_effect=answer)
    result = cli("wait", str(ids), "--timeout", "0.05", "--no-progress")
    assert_one_line_error(result, "job-2 is still QUEUED", "p.results.jsonl", "results ")
    assert result.exit_code == 124  # the wait ran out; nothing failed
    assert [line["custom_id"] for line in read_jsonl(tmp_path / "p.results.jsonl")] == ["a"]


def _interrupted_wait(
    after: list[httpx.Response | Exception],
) -> Callable[[httpx.Request], httpx.Response]:
    """Poll answers: the wait's first long-poll is stopped by Ctrl-C, then ``after``."""
    answers: list[httpx.Response | BaseException] = [KeyboardInterrupt(), *after]

    def answer(request: httpx.Request) -> httpx.Response:
        next_answer = answers.pop(0)
        if isinstance(next_answer, BaseException):
            raise next_answer
        return next_answer

    return answer


def test_ctrl_c_in_a_results_wait_writes_what_finished(
    tmp_path: Path, cli: Cli, server: respx.MockRouter
) -> None:
    ids = ids_file(tmp_path, [("a", "job-1"), ("b", "job-2")])
    latest = [entry_body("job-1", "COMPLETED"), entry_body("job-2", "QUEUED")]
    server.post("/v1/results/poll").mock(
        side_effect=_interrupted_wait([httpx.Response(200, json=latest)])
    )
    result = cli("wait", str(ids), "--no-progress")
    assert_one_line_error(result, "nothing was cancelled", "p.results.jsonl", "results ")
    assert result.exit_code == 130
    assert [line["custom_id"] for line in read_jsonl(tmp_path / "p.results.jsonl")] == ["a"]


def test_ctrl_c_in_a_results_wait_keeps_the_output_when_the_server_is_gone(
    tmp_path: Path, cli: Cli, server: respx.MockRouter
) -> None:
    ids = ids_file(tmp_path, [("a", "job-1")])
    out = tmp_path / "p.results.jsonl"
    out.write_text('{"custom_id": "from an earlier run"}\n')
    server.post("/v1/results/poll").mock(
        side_effect=_interrupted_wait([httpx.ConnectError("refused")] * 10)
    )
    result = cli("results", str(ids), "--wait", "--no-progress")
    assert_one_line_error(result, "nothing was cancelled and nothing written")
    assert result.exit_code == 130
    assert out.read_text() == '{"custom_id": "from an earlier run"}\n'


def test_results_with_a_malformed_ids_file(tmp_path: Path, cli: Cli) -> None:
    bad = write_lines(tmp_path / "x.ids.jsonl", [{"custom_id": "a"}])
    assert_one_line_error(cli("results", str(bad)), "x.ids.jsonl:1", "job_id")


def test_submit_file_then_results_round_trip(
    tmp_path: Path, cli: Cli, server: respx.MockRouter, bulk: BulkServer
) -> None:
    source = write_lines(tmp_path / "p.jsonl", [batch_line("q1", "one"), batch_line("q2", "two")])
    assert cli("submit-file", str(source)).exit_code == 0

    def answer(request: httpx.Request) -> httpx.Response:
        ids = json.loads(request.content)["ids"]
        return httpx.Response(200, json=[entry_body(job_id, "COMPLETED") for job_id in ids])

    server.post("/v1/results/poll").mock(side_effect=answer)
    result = cli("results", str(tmp_path / "p.ids.jsonl"), "--wait")
    assert result.exit_code == 0, result.stderr
    lines = read_jsonl(tmp_path / "p.results.jsonl")
    assert [(line["custom_id"], line["id"]) for line in lines] == [("q1", "job-1"), ("q2", "job-2")]


def test_a_rerun_after_the_purge_keeps_the_answers_already_written(
    tmp_path: Path, cli: Cli, server: respx.MockRouter
) -> None:
    """The jobs' retention ended: the output file is the only copy left of their answers."""
    ids = ids_file(tmp_path, [("a", "job-1"), ("b", "job-2"), ("c", "job-3")])
    server.post("/v1/results/poll").mock(
        side_effect=[
            httpx.Response(
                200,
                json=[
                    entry_body("job-1", "COMPLETED", result=completion_body("A")),
                    entry_body("job-2", "CANCELLED"),
                    entry_body("job-3", "PROCESSING"),
                ],
            ),
            httpx.Response(
                200,
                json=[
                    entry_body("job-1", "NOT_FOUND"),
                    entry_body("job-2", "NOT_FOUND"),
                    entry_body("job-3", "NOT_FOUND"),
                ],
            ),
        ]
    )
    assert cli("results", str(ids)).exit_code == 0
    first = read_jsonl(tmp_path / "p.results.jsonl")
    again = cli("results", str(ids))
    assert again.exit_code == 0, again.stderr
    lines = read_jsonl(tmp_path / "p.results.jsonl")
    assert lines[:2] == first
    assert lines[2]["custom_id"] == "c" and lines[2]["error"]["code"] == "not_found"
    assert "(1 CANCELLED, 1 COMPLETED, 1 NOT_FOUND)" in again.stdout


def test_an_interrupted_submit_file_run_again_creates_nothing_twice(
    tmp_path: Path, cli: Cli, server: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after the first chunk: exit 130, no id map; the same command again sends
    every chunk with the keys of the first run, so the server answers what it made."""
    monkeypatch.setattr(chat_module, "MAX_BULK_SUBMIT", 2)
    made: dict[str, list[dict]] = {}

    def server_side(request: httpx.Request) -> httpx.Response:
        key = request.headers["Idempotency-Key"]
        if key not in made:  # the server stores the chunk, then the user presses Ctrl-C
            batch = json.loads(request.content)["requests"]
            made[key] = [job_body(f"job-{len(made)}-{n}") for n in range(len(batch))]
            if len(made) == 2:
                raise KeyboardInterrupt
        return httpx.Response(202, json={"object": "list", "data": made[key]})

    server.post("/v1/chat/completions/bulk").mock(side_effect=server_side)
    source = write_lines(tmp_path / "p.jsonl", [batch_line(c, c) for c in "abcd"])
    stopped = cli("submit-file", str(source))
    assert stopped.exit_code == 130
    assert "Run the same command again to finish" in stopped.stderr
    assert not (tmp_path / "p.ids.jsonl").exists()

    finished = cli("submit-file", str(source))
    assert finished.exit_code == 0, finished.stderr
    assert len(made) == 2  # both chunks answered again, none queued twice
    assert [line["job_id"] for line in read_jsonl(tmp_path / "p.ids.jsonl")] == [
        "job-0-0",
        "job-0-1",
        "job-1-0",
        "job-1-1",
    ]
    # --force is a new submission: new keys, new jobs.
    cli("submit-file", str(source), "--force")
    assert len(made) == 4


def test_ctrl_c_while_the_file_is_checked_sends_nothing(
    tmp_path: Path, cli: Cli, server: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = server.post("/v1/chat/completions/bulk").respond(202, json={"data": []})
    read = batch_module.iter_batch_input

    def interrupted(path: Path, default_model: str | None) -> Iterator[BatchRequest]:
        yield from itertools.islice(read(path, default_model), 1)
        raise KeyboardInterrupt

    monkeypatch.setattr(batch_module, "iter_batch_input", interrupted)
    source = write_lines(tmp_path / "p.jsonl", [batch_line(c, c) for c in "ab"])
    stopped = cli("submit-file", str(source))
    assert stopped.exit_code == 130
    assert_one_line_error(stopped, f"stopped while checking {source}; nothing was sent")
    assert not route.called
    assert not (tmp_path / "p.ids.jsonl").exists()
