"""File storage in database parts: round trip, limits, ownership, nothing left by a refusal."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import Role
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.tables import file_chunks, files
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue import files as store_module
from openbeepboop_server.queue.files import (
    FileGoneError,
    FileRefusedError,
    FileStore,
    UploadInProgressError,
)

OWNER = Caller(key_id=1, key_name="u", role=Role.USER)
OTHER = Caller(key_id=2, key_name="v", role=Role.USER)
ADMIN = Caller(key_id=3, key_name="a", role=Role.ADMIN)


def _rows(db: Database) -> tuple[int, int]:
    with db.read() as conn:
        return (
            conn.execute(sa.select(sa.func.count()).select_from(files)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(file_chunks)).scalar_one(),
        )


def test_round_trip_in_parts_and_ownership(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "CHUNK_BYTES", 4)
    store = FileStore(db)
    saved = store.save(OWNER.key_id, "in.jsonl", "batch", [b"ab", b"c\nde", b"fgh\nij"])
    assert saved.bytes == 12
    found = store.find(OWNER, saved.id)
    assert found is not None and b"".join(store.read_all(found)) == b"abc\ndefgh\nij"
    assert _rows(db) == (1, 3)
    assert store.find(OTHER, saved.id) is None and store.find(ADMIN, saved.id) is not None
    assert [f.id for f in store.list_page(OWNER, limit=10, after=None, purpose=None).data] == [
        saved.id
    ]
    assert store.list_page(OTHER, limit=10, after=None, purpose=None).data == []
    assert not store.delete(OTHER, saved.id)
    assert store.delete(OWNER, saved.id)
    assert _rows(db) == (0, 0)


def test_a_file_deleted_while_read_is_cut_not_shorter(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Parts that end on a line end: read to the last one found, a cut file
    # looked like a whole shorter one (a batch ran only its first lines).
    monkeypatch.setattr(store_module, "CHUNK_BYTES", 4)
    store = FileStore(db)
    saved = store.save(OWNER.key_id, "in.jsonl", "batch", [b"abc\ndef\nghi\n"])
    found = store.find(OWNER, saved.id)
    assert found is not None
    parts = store.read_all(found)
    assert next(parts) == b"abc\n"
    assert store.delete(OWNER, saved.id)
    with pytest.raises(FileGoneError):
        next(parts)


def test_a_file_over_a_limit_leaves_nothing(db: Database) -> None:
    store = FileStore(db)
    with pytest.raises(FileRefusedError) as too_many:
        store.save(OWNER.key_id, "x", "batch", [b"a\nb\nc"], max_lines=2)
    assert not too_many.value.too_large
    with pytest.raises(FileRefusedError) as too_big:
        store.save(OWNER.key_id, "x", "batch", [b"x" * 100], max_bytes=10)
    assert too_big.value.too_large
    assert _rows(db) == (0, 0)


def _crash_mid_upload(
    store: FileStore, idempotency_key: str | None = None, request_hash: str | None = None
) -> None:
    """An upload whose process dies after its first parts: its row stays ``uploading``."""

    def crash_after_first_part() -> Iterator[bytes]:
        yield b"x" * store_module.CHUNK_BYTES * store_module.PARTS_PER_WRITE
        raise KeyboardInterrupt  # the process dies: _discard never gets to run

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "_discard", lambda seq: None)
        with pytest.raises(KeyboardInterrupt):
            store.save(
                OWNER.key_id,
                "big.jsonl",
                "batch",
                crash_after_first_part(),
                idempotency_key=idempotency_key,
                request_hash=request_hash,
            )


def test_an_upload_cut_off_by_a_crash_is_swept_after_the_age(db: Database) -> None:
    clock = [1_000.0]
    store = FileStore(db, lambda: clock[0])
    _crash_mid_upload(store)
    assert _rows(db) == (1, store_module.PARTS_PER_WRITE)
    kept = store.save(OWNER.key_id, "done.jsonl", "batch", [b"a\n"])
    clock[0] += 3599
    assert store.sweep_uploading(3600) == 0
    clock[0] += 2
    assert store.sweep_uploading(3600) == 1
    assert _rows(db) == (1, 1)  # the finished file is kept
    assert store.find(OWNER, kept.id) is not None


@pytest.mark.parametrize(
    ("parts", "lines"),
    [
        ([b'{"a":1}\n{"b":2}\n'], 2),
        ([b'{"a":1}\n{"b":2}\n\n'], 2),  # a trailing blank line is the same file
        ([b'{"a":1}\n  \n\t\r\n{"b":2}'], 2),  # blank lines inside; no final newline
        ([b'{"a"', b":1}\n", b"   ", b"\n", b"  {}"], 2),  # lines and blanks across blocks
        ([b"\n\n \n"], 0),
    ],
)
def test_only_lines_holding_something_are_counted(
    db: Database, parts: list[bytes], lines: int
) -> None:
    """Blank lines carry no request: they count neither as lines nor against quotas."""
    store = FileStore(db)
    saved = store.save(OWNER.key_id, "in.jsonl", "batch", parts, max_lines=2)
    with db.read() as conn:
        stored = conn.execute(sa.select(files.c.lines).where(files.c.id == saved.id)).scalar_one()
    assert stored == lines


def test_a_key_held_by_an_upload_cut_off_by_a_crash_is_freed_after_the_age(db: Database) -> None:
    clock = [1_000.0]
    store = FileStore(db, lambda: clock[0])
    _crash_mid_upload(store, idempotency_key="k1", request_hash="h1")
    # Soon after, a twin is told to retry: the first may still be storing its parts.
    with pytest.raises(UploadInProgressError) as in_progress:
        store.find_by_key(OWNER, "k1", "h1", stale_after=600)
    # ... and when the key frees up, should that first upload have been cut off.
    assert "free again at 00:26:40 UTC" in str(in_progress.value)  # 1,000 s + 600 s
    # Past the age no upload can still be storing: the key is free, the parts gone.
    clock[0] += 601
    assert store.find_by_key(OWNER, "k1", "other-bytes", stale_after=600) is None
    assert _rows(db) == (0, 0)
    again = store.save(
        OWNER.key_id, "big.jsonl", "batch", [b"{}\n"], idempotency_key="k1", request_hash="h2"
    )
    assert store.find_by_key(OWNER, "k1", "h2", stale_after=600) == again
