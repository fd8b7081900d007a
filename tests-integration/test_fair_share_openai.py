"""The priority ceiling on the OpenAI surface (docs/api.md, "Claim order"): the
synchronous chat and a batch line above the key's max_priority store nothing."""

from __future__ import annotations

import json

import openai
import pytest
from openai_world import MODEL, OpenAIWorld, native_jobs
from openbeepboop_testkit.processes import wait_until

TIMEOUT = 60.0


def test_the_openai_surface_honours_the_priority_ceiling(oa: OpenAIWorld) -> None:
    key = oa.server.create_key("USER", "oa-ceiling")
    client = openai.OpenAI(base_url=oa.base_url, api_key=key, timeout=60)
    messages = [{"role": "user", "content": "urgent"}]
    with pytest.raises(openai.PermissionDeniedError, match="max_priority of 0"):
        client.chat.completions.create(
            model=MODEL,
            messages=messages,  # type: ignore[arg-type]
            extra_body={"priority": 4},
        )
    lines = [
        {"custom_id": f"c-{n}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": MODEL, "messages": messages, **({"priority": 4} if n == 1 else {})}}
        for n in range(3)
    ]  # fmt: skip
    text = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    uploaded = client.files.create(file=("input.jsonl", text), purpose="batch")
    created = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    def ended() -> openai.types.Batch | None:
        batch = client.batches.retrieve(created.id)
        return batch if batch.status in ("failed", "completed", "cancelled", "expired") else None

    batch = wait_until(ended, TIMEOUT, f"batch {created.id} to end", interval=0.2)
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert [error.code for error in batch.errors.data] == ["priority_above_ceiling"]
    assert native_jobs(oa, key) == []
