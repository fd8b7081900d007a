"""A running server's housekeeping sweeps uploads a crash left ``uploading``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from openbeepboop_server.app import create_app
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.migrate import upgrade_to_head
from openbeepboop_server.db.tables import file_chunks, files
from openbeepboop_server.queue import files as store_module
from openbeepboop_server.queue.files import FileStore
from starlette.testclient import TestClient

from tests.support.surface import make_settings
from tests.support.waiting import wait_until


def _counts(db: Database) -> tuple[int, int]:
    with db.read() as conn:
        return (
            conn.execute(sa.select(sa.func.count()).select_from(files)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(file_chunks)).scalar_one(),
        )


def _cut_off_upload(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a server killed in the middle of copying an upload leaves behind."""
    store = FileStore(db)

    def parts() -> Iterator[bytes]:
        yield b"x" * store_module.CHUNK_BYTES * store_module.PARTS_PER_WRITE
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(store, "_discard", lambda seq: None)  # no clean-up: the process died
        with pytest.raises(KeyboardInterrupt):
            store.save(1, "cut.jsonl", "batch", parts())


def test_housekeeping_sweeps_an_upload_left_uploading_once_it_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(
        tmp_path,
        openai={"stale_upload_seconds": 0.5},
        queue={"purge_interval_seconds": 0.1},
    )
    upgrade_to_head(settings.database.url)
    db = Database.connect(settings.database.url)
    try:
        _cut_off_upload(db, monkeypatch)
        assert _counts(db) == (1, store_module.PARTS_PER_WRITE)
        with TestClient(create_app(settings)):
            wait_until(lambda: _counts(db) == (0, 0), 30, "the stale upload to be swept")
    finally:
        db.dispose()
