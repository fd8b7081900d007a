"""Files and Batches under /openai/v1, driven by the official ``openai`` SDK.

Each test uploads a small JSONL file (10 to 30 lines), creates a batch and
follows it the way OpenAI batch scripts do: ``batches.retrieve`` until it
ends, then ``files.content`` of its output and error files.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai_world import MODEL, OpenAIWorld, native_jobs
from openbeepboop_testkit.processes import wait_until

FINAL = {"completed", "failed", "expired", "cancelled"}
TIMEOUT = 120.0


@pytest.fixture(autouse=True)
def _calm_llm(oa: OpenAIWorld) -> Iterator[None]:
    yield
    oa.llm.configure(delay=0.0, fail_prompts=[])


def _line(custom_id: str, prompt: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": [{"role": "user", "content": prompt}], **body},
    }


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _client(oa: OpenAIWorld, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=oa.base_url, api_key=key or oa.user_key, timeout=60)


def _start(client: openai.OpenAI, lines: list[dict[str, Any]], window: str = "24h") -> str:
    uploaded = client.files.create(file=("input.jsonl", _jsonl(lines)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(_jsonl(lines))
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window=window,  # type: ignore[arg-type]
        metadata={"test": "yes"},
    )
    assert batch.status == "validating" and batch.metadata == {"test": "yes"}
    return batch.id


def _wait_final(client: openai.OpenAI, batch_id: str) -> openai.types.Batch:
    def ended() -> openai.types.Batch | None:
        batch = client.batches.retrieve(batch_id)
        return batch if batch.status in FINAL else None

    return wait_until(ended, TIMEOUT, f"batch {batch_id} to end", interval=0.2)


def _lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_batch_completes_with_one_output_line_per_input_line(oa: OpenAIWorld) -> None:
    client = _client(oa)
    lines = [_line(f"req-{n}", f"batch prompt {n}") for n in range(20)]
    batch_id = _start(client, lines)
    batch = _wait_final(client, batch_id)

    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (20, 20)
    assert batch.request_counts.failed == 0
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    assert batch.error_file_id is None
    output = _lines(client, batch.output_file_id)
    assert [line["custom_id"] for line in output] == [f"req-{n}" for n in range(20)]
    for n, line in enumerate(output):
        assert line["error"] is None and line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["choices"][0]["message"]["content"] == f"Echo: batch prompt {n}"

    jobs = native_jobs(oa, oa.user_key, batch_id=batch_id)
    assert len(jobs) == 20 and {job["status"] for job in jobs} == {"COMPLETED"}
    assert {line["response"]["request_id"] for line in output} == {job["id"] for job in jobs}
    assert batch_id in [listed.id for listed in client.batches.list(limit=100)]
    assert batch.output_file_id in [listed.id for listed in client.files.list()]


def test_a_permanently_failing_line_and_only_it_is_in_the_error_file(oa: OpenAIWorld) -> None:
    oa.llm.configure(fail_prompts=["POISON"])
    client = _client(oa)
    lines = [_line(f"p-{n}", f"poison test {'POISON' if n == 3 else n}") for n in range(10)]
    batch = _wait_final(client, _start(client, lines))

    assert batch.status == "completed"
    assert batch.request_counts is not None and batch.request_counts.failed == 1
    output, errors = _lines(client, batch.output_file_id), _lines(client, batch.error_file_id)
    assert [line["custom_id"] for line in output] == [f"p-{n}" for n in range(10) if n != 3]
    [failed] = errors
    assert failed["custom_id"] == "p-3" and failed["response"]["status_code"] == 400
    assert "rejected this prompt" in failed["response"]["body"]["error"]["message"]


def test_a_broken_input_line_fails_the_batch_before_any_job(oa: OpenAIWorld) -> None:
    key = oa.server.create_key("USER", "oa-broken")
    client = _client(oa, key)
    good = [_jsonl([_line(f"b-{n}", f"broken {n}")]) for n in range(4)]
    text = good[0] + good[1] + b"{not json\n" + good[2] + _jsonl([_line("b-0", "again")])
    uploaded = client.files.create(file=("broken.jsonl", text), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = _wait_final(client, batch.id)

    assert batch.status == "failed" and batch.failed_at
    assert batch.errors is not None and batch.errors.data is not None
    assert [(error.line, error.code) for error in batch.errors.data] == [
        (3, "invalid_json_line"),
        (5, "duplicate_custom_id"),
    ]
    assert native_jobs(oa, key) == []
    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )


def test_a_line_over_a_limits_cap_fails_the_batch_before_any_job(oa: OpenAIWorld) -> None:
    """Batch lines are held to ``[limits]`` like native requests (max_n is 8 by default)."""
    client = _client(oa)
    lines = [_line(f"c-{n}", f"capped {n}") for n in range(5)]
    lines[3]["body"]["n"] = 9
    batch_id = _start(client, lines)
    batch = _wait_final(client, batch_id)

    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    [error] = batch.errors.data
    assert (error.line, error.code, error.param) == (4, "cap_exceeded", "body.n")
    assert "max_n = 8" in (error.message or "")
    assert native_jobs(oa, oa.user_key, batch_id=batch_id) == []


def test_cancel_mid_run_ends_cancelled_with_partial_files(oa: OpenAIWorld) -> None:
    oa.llm.configure(delay=0.3)
    client = _client(oa)
    lines = [_line(f"c-{n}", f"cancel me {n}") for n in range(30)]
    batch_id = _start(client, lines)

    def started() -> bool:
        counts = client.batches.retrieve(batch_id).request_counts
        return counts is not None and counts.completed >= 1

    wait_until(started, TIMEOUT, "the first line to finish", interval=0.1)
    assert client.batches.cancel(batch_id).status in {"cancelling", "cancelled"}
    batch = _wait_final(client, batch_id)

    assert batch.status == "cancelled" and batch.cancelling_at and batch.cancelled_at
    output, errors = _lines(client, batch.output_file_id), _lines(client, batch.error_file_id)
    assert len(output) + len(errors) == 30
    assert output and any(line["error"]["code"] == "batch_cancelled" for line in errors)
    ids = [line["custom_id"] for line in output]
    assert ids == sorted(ids, key=lambda custom_id: int(custom_id[2:]))


def test_an_elapsed_completion_window_ends_expired(oa: OpenAIWorld) -> None:
    oa.llm.configure(delay=0.5)
    client = _client(oa)
    lines = [_line(f"e-{n}", f"expire me {n}") for n in range(40)]
    batch = _wait_final(client, _start(client, lines, window="2s"))

    assert batch.status == "expired" and batch.expired_at
    output, errors = _lines(client, batch.output_file_id), _lines(client, batch.error_file_id)
    assert len(output) + len(errors) == 40
    assert errors and all(line["error"]["code"] == "batch_expired" for line in errors)
    with pytest.raises(openai.BadRequestError):
        _start(client, lines, window="forever")


def test_another_key_sees_404_and_a_bad_key_401(oa: OpenAIWorld) -> None:
    client = _client(oa)
    batch = _wait_final(client, _start(client, [_line("o-1", "owned")]))
    stranger = _client(oa, oa.other_key)
    with pytest.raises(openai.NotFoundError):
        stranger.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        stranger.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):
        stranger.files.retrieve(batch.input_file_id)
    with pytest.raises(openai.NotFoundError):
        stranger.files.content(batch.input_file_id)
    with pytest.raises(openai.NotFoundError):
        stranger.batches.create(
            input_file_id=batch.input_file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
    assert batch.id not in [listed.id for listed in stranger.batches.list()]
    with pytest.raises(openai.AuthenticationError):
        _client(oa, "sk-wrong-wrong-wrong-wrong-wrong-wrong-00").batches.list()

    assert client.files.delete(batch.input_file_id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(batch.input_file_id)


def test_file_limits_refuse_before_anything_is_queued(oa: OpenAIWorld) -> None:
    client = _client(oa)
    too_many = _jsonl([_line(f"l-{n}", "x") for n in range(1001)])
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("many.jsonl", too_many), purpose="batch")
    with pytest.raises(openai.APIStatusError) as too_large:
        client.files.create(file=("big.jsonl", b"x" * (400 * 1024)), purpose="batch")
    assert too_large.value.status_code == 413
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="fine-tune")


def test_async_client_runs_a_batch(oa: OpenAIWorld) -> None:
    async def main() -> list[str]:
        async with openai.AsyncOpenAI(base_url=oa.base_url, api_key=oa.user_key) as client:
            data = _jsonl([_line(f"a-{n}", f"async batch {n}") for n in range(10)])
            uploaded = await client.files.create(file=("a.jsonl", data), purpose="batch")
            batch = await client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            for _ in range(int(TIMEOUT / 0.2)):
                batch = await client.batches.retrieve(batch.id)
                if batch.status in FINAL:
                    break
                await asyncio.sleep(0.2)
            assert batch.status == "completed" and batch.output_file_id
            content = await client.files.content(batch.output_file_id)
            return [json.loads(line)["custom_id"] for line in content.text.splitlines()]

    assert asyncio.run(main()) == [f"a-{n}" for n in range(10)]


def test_client_cli_starts_follows_and_collects_a_server_batch(oa: OpenAIWorld) -> None:
    config = oa.cluster.client_config(oa.server, oa.user_key, name="oa-cli")
    source = oa.cluster.root / "cli-input.jsonl"
    source.write_bytes(_jsonl([_line(f"cli-{n}", f"cli batch {n}") for n in range(12)]))

    done = oa.cluster.client(
        "batch", "create", str(source), "--wait", "--json", "--config", str(config)
    )
    batch = json.loads(done.stdout)
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {"total": 12, "completed": 12, "failed": 0}

    output = oa.cluster.root / "cli-output.jsonl"
    oa.cluster.client("batch", "results", batch["id"], "-o", str(output), "--config", str(config))
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == [f"cli-{n}" for n in range(12)]

    missing = oa.cluster.client(
        "batch", "status", "batch_nope", "--config", str(config), check=False
    )
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().startswith("Error:")
