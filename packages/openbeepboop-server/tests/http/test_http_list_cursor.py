"""A listing's ``after`` naming an item gone since the last page: go on, or say so.

Retention purges jobs and users delete files between two pages; a page after
such a cursor must neither end the listing silently (an empty page with items
left) nor be a guess. Run on both databases: the job cursor is found again
through the ``jobs.id`` index, whose ordering is the database's.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import FILE_ID_PREFIX, JOB_ID_PREFIX
from openbeepboop_server.context import ServerContext
from openbeepboop_server.db.tables import jobs
from openbeepboop_server.queue import files as files_module
from openbeepboop_server.queue import submission
from starlette.testclient import TestClient

from tests.support.surface import ApiKeys, bearer, chat

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def job_ids(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Jobs made one millisecond apart (the real clock may give several one millisecond)."""
    made: list[str] = []
    millis = itertools.count(1_700_000_000_000)

    def new_job_id() -> str:
        made.append(f"{JOB_ID_PREFIX}{next(millis):012x}{len(made):020x}")
        return made[-1]

    monkeypatch.setattr(submission, "new_job_id", new_job_id)
    return made


def _submit(client: TestClient, key: str) -> str:
    response = client.post("/v1/chat/completions", json=chat(), headers=bearer(key))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _purge(context: ServerContext, job_id: str) -> None:
    with context.db.write() as conn:
        assert conn.execute(sa.delete(jobs).where(jobs.c.id == job_id)).rowcount == 1


def _page(client: TestClient, key: str, query: str) -> Any:
    response = client.get(f"/v1/jobs?{query}", headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


def test_a_job_cursor_purged_between_pages_continues_where_it_was(
    client: TestClient, context: ServerContext, api_keys: ApiKeys, job_ids: list[str]
) -> None:
    ids = [_submit(client, api_keys.user) for _ in range(6)]
    _submit(client, api_keys.other_user)  # a newer job of someone else, never listed

    first = _page(client, api_keys.user, "limit=2")
    assert [entry["id"] for entry in first["data"]] == [ids[5], ids[4]]
    _purge(context, first["next_after"])
    second = _page(client, api_keys.user, f"limit=2&after={first['next_after']}")
    assert [entry["id"] for entry in second["data"]] == [ids[3], ids[2]]
    assert second["has_more"] is True
    # The job right before the cursor gone too: still no gap.
    _purge(context, ids[1])
    _purge(context, second["next_after"])
    third = _page(client, api_keys.user, f"limit=2&after={second['next_after']}")
    assert [entry["id"] for entry in third["data"]] == [ids[0]]
    assert third["has_more"] is False


def test_a_cursor_that_is_not_a_job_id_is_a_400_not_an_empty_page(
    client: TestClient, api_keys: ApiKeys, job_ids: list[str]
) -> None:
    _submit(client, api_keys.user)
    for after in ("garbage", "job-123", "file-abc", f"{JOB_ID_PREFIX}{'G' * 32}"):
        response = client.get(f"/v1/jobs?after={after}", headers=bearer(api_keys.user))
        assert response.status_code == 400, (after, response.text)
        error = response.json()["error"]
        assert (error["param"], error["code"]) == ("after", "invalid_cursor")
        assert after in error["message"]


def _upload(client: TestClient, key: str, name: str) -> str:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": chat()}
    uploaded = client.post(
        "/openai/v1/files",
        files={"file": (name, json.dumps(line).encode())},
        data={"purpose": "batch"},
        headers=bearer(key),
    )
    assert uploaded.status_code == 200, uploaded.text
    return str(uploaded.json()["id"])


def test_the_sdks_list_and_delete_loop_deletes_every_file(
    client: TestClient, api_keys: ApiKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``for f in client.files.list(limit=1): client.files.delete(f.id)``: each next page
    names the file just deleted, and goes on from where its id says it was."""
    millis = itertools.count(1_700_000_000_000)
    monkeypatch.setattr(
        files_module, "new_file_id", lambda: f"{FILE_ID_PREFIX}{next(millis):012x}{0:012x}"
    )
    made = [_upload(client, api_keys.user, f"{n}.jsonl") for n in range(3)]
    deleted: list[str] = []
    after = ""
    while True:
        page = client.get(f"/openai/v1/files?limit=1{after}", headers=bearer(api_keys.user))
        assert page.status_code == 200, page.text
        for item in page.json()["data"]:
            gone = client.delete(f"/openai/v1/files/{item['id']}", headers=bearer(api_keys.user))
            assert gone.status_code == 200, gone.text
            deleted.append(item["id"])
        if not page.json()["has_more"]:
            break
        after = f"&after={deleted[-1]}"
    assert deleted == made[::-1]
    # Another key's file is a position like any other: it tells nothing of whose it is.
    foreign = client.get(f"/openai/v1/files?after={made[1]}", headers=bearer(api_keys.other_user))
    assert foreign.status_code == 200 and foreign.json()["data"] == []


def test_a_file_cursor_that_is_no_file_id_is_a_400(client: TestClient, api_keys: ApiKeys) -> None:
    garbage = client.get("/openai/v1/files?after=garbage", headers=bearer(api_keys.user))
    assert garbage.status_code == 400, garbage.text
    assert (garbage.json()["error"]["param"], garbage.json()["error"]["code"]) == (
        "after",
        "invalid_cursor",
    )


def test_a_batch_cursor_that_names_no_batch_is_a_404_and_one_not_an_id_a_400(
    client: TestClient, api_keys: ApiKeys
) -> None:
    for after, status, code in (
        ("garbage", 400, "invalid_cursor"),
        # Made before ids were time-ordered: its "millisecond" is far in the future.
        ("batch_f123456789abcdef01234567", 404, "cursor_not_found"),
    ):
        response = client.get(f"/openai/v1/batches?after={after}", headers=bearer(api_keys.user))
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert (error["param"], error["code"]) == ("after", code)
