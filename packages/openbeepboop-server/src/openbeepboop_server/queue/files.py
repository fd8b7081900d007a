"""Files of the OpenAI surface, stored in the database in chunks.

Why the database and not a directory: several replicas share one database
(and no disk), a backup of the database is a backup of the files, and
deleting a file is a transaction like any other. A file is written in parts
of :data:`CHUNK_BYTES`, a few parts per transaction, so the one SQLite writer
is never held for a whole 200 MB upload; until its last part is in, the file
is ``uploading`` and invisible. Reading streams it back one part at a time,
so neither direction ever holds a whole file in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from openbeepboop_schemas import FILE_ID_PREFIX, FileList, FileObject, Role

from openbeepboop_server.db.database import Database
from openbeepboop_server.db.safe_text import db_text, idempotency_column
from openbeepboop_server.db.tables import file_chunks, files
from openbeepboop_server.errors import IdempotencyKeyReused, ServerError
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue.ids import new_time_ordered_id
from openbeepboop_server.queue.views import FILE_CURSOR, may_see, seq_after_vanished

#: Bytes per stored part: large enough that a 200 MB file is 200 rows.
CHUNK_BYTES = 1024 * 1024
#: Parts written per transaction (the SQLite writer is released in between).
PARTS_PER_WRITE = 8
UPLOADING = "uploading"
PROCESSED = "processed"
#: Largest page of :meth:`FileStore.list_page`.
MAX_PAGE = 10_000


class FileRefusedError(ServerError):
    """A file over a limit; ``too_large`` tells bytes (413) from lines (400)."""

    def __init__(self, message: str, *, too_large: bool) -> None:
        super().__init__(message)
        self.too_large = too_large


class FileGoneError(ServerError):
    """The file was deleted while it was being read."""

    def __init__(self, file_id: str) -> None:
        super().__init__(f"file {file_id} was deleted while it was being read")
        self.file_id = file_id


class UploadInProgressError(ServerError):
    """An upload with this ``Idempotency-Key`` is still being stored: retry shortly."""


@dataclass(frozen=True)
class StoredFile:
    """A file's public view and where its bytes are."""

    view: FileObject
    seq: int
    owner_key_id: int


def new_file_id() -> str:
    """``file-`` plus 24 hex characters, time-ordered (:mod:`~openbeepboop_server.queue.ids`)."""
    return new_time_ordered_id(FILE_ID_PREFIX)


def _view(row: Any) -> FileObject:
    return FileObject(
        id=row.id,
        bytes=row.bytes,
        created_at=int(row.created_at),
        filename=row.filename,
        purpose=row.purpose,
        status=row.status,
    )


class RequestLineCounter:
    """Counts the lines of a file fed in blocks that hold something besides whitespace.

    Blank lines carry no request (batch_lines.py skips them), so they count
    neither against ``max_file_lines`` nor, through the stored count, against
    a key's ``max_queued``: a file with a trailing blank line is the file
    without it. A line may span blocks.
    """

    def __init__(self) -> None:
        self.lines = 0
        #: The line not yet ended has held nothing but whitespace so far.
        self._blank = True

    def feed(self, block: bytes) -> None:
        """Count the lines ``block`` ends; remember whether the open one holds anything."""
        *ended, opened = block.split(b"\n")
        for line in ended:
            if not self._blank or line.strip():
                self.lines += 1
            self._blank = True
        self._blank = self._blank and not opened.strip()

    def close(self) -> int:
        """The count, the last line included if it holds something without a newline."""
        return self.lines + (0 if self._blank else 1)


def _blocks(parts: Iterable[bytes]) -> Iterator[bytes]:
    """``parts`` re-cut into blocks of exactly :data:`CHUNK_BYTES` (the last may be shorter)."""
    pending = bytearray()
    for part in parts:
        pending += part
        while len(pending) >= CHUNK_BYTES:
            yield bytes(pending[:CHUNK_BYTES])
            del pending[:CHUNK_BYTES]
    if pending:
        yield bytes(pending)


class FileStore:
    """Saving, listing, reading and deleting files; each method is its own transaction(s)."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    def save(
        self,
        owner_key_id: int,
        filename: str,
        purpose: str,
        parts: Iterable[bytes],
        *,
        max_bytes: int | None = None,
        max_lines: int | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> FileObject:
        """Store the bytes of ``parts`` as a new file; :class:`FileRefusedError` past a limit.

        With ``idempotency_key`` the file row carries it from its first
        transaction on, so a concurrent twin fails on the unique index
        (IntegrityError) before writing a part: see :meth:`find_by_key`.
        """
        file_id = new_file_id()
        now = self._clock()
        with self._db.write() as conn:
            inserted = conn.execute(
                files.insert().values(
                    id=file_id,
                    owner_key_id=owner_key_id,
                    purpose=purpose,
                    filename=db_text(filename)[:512],
                    bytes=0,
                    lines=0,
                    status=UPLOADING,
                    created_at=now,
                    idempotency_key=(
                        None if idempotency_key is None else idempotency_column(idempotency_key)
                    ),
                    request_hash=request_hash,
                )
            ).inserted_primary_key
            assert inserted is not None
            seq = int(inserted[0])
        size = 0
        counter = RequestLineCounter()
        pending: list[dict[str, Any]] = []
        try:
            for number, block in enumerate(_blocks(parts)):
                size += len(block)
                counter.feed(block)
                if max_bytes is not None and size > max_bytes:
                    raise FileRefusedError(
                        f"file is larger than the server's limit of {max_bytes} bytes",
                        too_large=True,
                    )
                if max_lines is not None and counter.lines > max_lines:
                    raise FileRefusedError(
                        f"file has more than the server's limit of {max_lines} lines",
                        too_large=False,
                    )
                pending.append({"file_seq": seq, "part": number, "data": block})
                if len(pending) >= PARTS_PER_WRITE:
                    self._write_parts(pending)
                    pending = []
            lines = counter.close()
            if max_lines is not None and lines > max_lines:
                raise FileRefusedError(
                    f"file has more than the server's limit of {max_lines} lines", too_large=False
                )
            with self._db.write() as conn:
                if pending:
                    conn.execute(file_chunks.insert(), pending)
                conn.execute(
                    files.update()
                    .where(files.c.seq == seq)
                    .values(status=PROCESSED, bytes=size, lines=lines)
                )
        except BaseException:
            self._discard(seq)
            raise
        return FileObject(
            id=file_id,
            bytes=size,
            created_at=int(now),
            filename=filename,
            purpose=purpose,
            status=PROCESSED,
        )

    def _write_parts(self, rows: list[dict[str, Any]]) -> None:
        with self._db.write() as conn:
            conn.execute(file_chunks.insert(), rows)

    def _discard(self, seq: int) -> None:
        with self._db.write() as conn:
            conn.execute(file_chunks.delete().where(file_chunks.c.file_seq == seq))
            conn.execute(files.delete().where(files.c.seq == seq))

    def find_by_key(
        self, caller: Caller, key: str, request_hash: str, *, stale_after: float | None = None
    ) -> FileObject | None:
        """The file an earlier upload of ``caller`` with this ``Idempotency-Key`` stored.

        None if there is none (never sent, or its file was deleted since: the
        key lives as long as its file). IdempotencyKeyReused if it stored other
        content; UploadInProgressError while its parts are still being written.
        An upload still ``uploading`` more than ``stale_after`` seconds after
        it began was cut off by a crash (what :meth:`sweep_uploading` deletes):
        it is deleted here and then, so a retry with its key is not refused
        until the next sweep.
        """
        with self._db.read() as conn:
            row = conn.execute(
                sa.select(files).where(
                    files.c.owner_key_id == caller.key_id,
                    files.c.idempotency_key == idempotency_column(key),
                )
            ).first()
        if row is None:
            return None
        stale = stale_after is not None and row.created_at < self._clock() - stale_after
        if row.status != PROCESSED and stale:
            self._discard(row.seq)
            return None
        if row.request_hash != request_hash:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was first sent with a different upload; nothing was "
                "stored (use a new key for a new file, the same key only to retry one)"
            )
        if row.status != PROCESSED:
            cut_off = ""
            if stale_after is not None:
                free_at = time.strftime("%H:%M:%S UTC", time.gmtime(row.created_at + stale_after))
                cut_off = (
                    f"; if that upload was cut off (its connection or the server stopped), "
                    f"the key is free again at {free_at} ([openai] stale_upload_seconds)"
                )
            raise UploadInProgressError(
                "an upload with this Idempotency-Key is still being stored; retry shortly" + cut_off
            )
        return _view(row)

    def find(self, caller: Caller, file_id: str) -> StoredFile | None:
        """A stored file ``caller`` may see, or None (unknown, uploading, another key's)."""
        with self._db.read() as conn:
            row = conn.execute(
                sa.select(files).where(files.c.id == db_text(file_id), files.c.status == PROCESSED)
            ).first()
        if row is None or not may_see(caller, row.owner_key_id):
            return None
        return StoredFile(view=_view(row), seq=row.seq, owner_key_id=row.owner_key_id)

    def list_page(
        self, caller: Caller, *, limit: int, after: str | None, purpose: str | None
    ) -> FileList:
        """The caller's files, newest first, ``limit`` per page after the file ``after``.

        CursorError if ``after`` names no file the caller may see.
        """
        limit = max(1, min(limit, MAX_PAGE))
        query = sa.select(files).where(files.c.status == PROCESSED)
        if caller.role is not Role.ADMIN:
            query = query.where(files.c.owner_key_id == caller.key_id)
        if purpose is not None:
            query = query.where(files.c.purpose == purpose)
        with self._db.read() as conn:
            if after is not None:
                cursor = self.find(caller, after)
                if cursor is not None:
                    query = query.where(files.c.seq < cursor.seq)
                else:
                    bound = seq_after_vanished(
                        conn, files.c.id, files.c.seq, after, FILE_ID_PREFIX, "file", FILE_CURSOR
                    )
                    if bound is not None:
                        query = query.where(files.c.seq < bound)
            rows = conn.execute(query.order_by(files.c.seq.desc()).limit(limit + 1)).all()
        data = [_view(row) for row in rows[:limit]]
        return FileList(
            data=data,
            has_more=len(rows) > limit,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
        )

    def part(self, seq: int, number: int) -> bytes | None:
        """Part ``number`` of the file ``seq``, or None past its end."""
        with self._db.read() as conn:
            data = conn.execute(
                sa.select(file_chunks.c.data).where(
                    file_chunks.c.file_seq == seq, file_chunks.c.part == number
                )
            ).scalar()
        return None if data is None else bytes(data)

    def read_all(self, stored: StoredFile) -> Iterator[bytes]:
        """Every part of ``stored``, in order, one read each.

        FileGoneError if the file is deleted while it is read: parts that
        stop short of its size are a cut file, never a shorter whole one.
        """
        read = number = 0
        while read < stored.view.bytes:
            data = self.part(stored.seq, number)
            if data is None:
                raise FileGoneError(stored.view.id)
            yield data
            read += len(data)
            number += 1

    def sweep_uploading(self, older_than_seconds: float) -> int:
        """Delete files still ``uploading`` that began more than ``older_than_seconds`` ago.

        An upload that completes or fails cleans up after itself; one cut off by
        a crash (the process killed between two parts) would hold its parts
        forever. Housekeeping calls this; returns how many files it deleted.
        """
        cutoff = self._clock() - older_than_seconds
        with self._db.read() as conn:
            stale = (
                conn.execute(
                    sa.select(files.c.seq).where(
                        files.c.status == UPLOADING, files.c.created_at < cutoff
                    )
                )
                .scalars()
                .all()
            )
        for seq in stale:
            self._discard(seq)
        return len(stale)

    @staticmethod
    def delete_named(
        conn: sa.Connection, owner_key_id: int, purpose: str, names: list[str], keep: list[str]
    ) -> int:
        """Delete ``owner_key_id``'s stored files of ``purpose`` named one of ``names``,
        but those in ``keep``, inside ``conn``'s transaction; how many there were.

        For the files only the server writes (batch output): ones a finalisation
        stored and never recorded, because it crashed or another replica won.
        """
        seqs = (
            conn.execute(
                sa.select(files.c.seq).where(
                    files.c.owner_key_id == owner_key_id,
                    files.c.purpose == purpose,
                    files.c.status == PROCESSED,
                    files.c.filename.in_(names),
                    files.c.id.not_in(keep),
                )
            )
            .scalars()
            .all()
        )
        if seqs:
            conn.execute(file_chunks.delete().where(file_chunks.c.file_seq.in_(seqs)))
            conn.execute(files.delete().where(files.c.seq.in_(seqs)))
        return len(seqs)

    def discard(self, file_id: str) -> None:
        """Delete a file by id, whoever owns it (the server's own, unrecorded, files)."""
        with self._db.read() as conn:
            seq = conn.execute(sa.select(files.c.seq).where(files.c.id == file_id)).scalar()
        if seq is not None:
            self._discard(int(seq))

    def delete(self, caller: Caller, file_id: str) -> bool:
        """Delete a file ``caller`` may see; False if there is none."""
        found = self.find(caller, file_id)
        if found is None:
            return False
        self._discard(found.seq)
        return True
