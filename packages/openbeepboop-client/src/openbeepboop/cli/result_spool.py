"""Where ``results`` keeps the output lines it collected until it writes them in id-map order.

An id map may name 50,000 jobs with answers of a few KB each: held in memory
they would take hundreds of MB, and the jobs finish in any order while the
output file must follow the id map. So each finished job's output line goes
to a spool file as soon as its entry arrives, and only where it lies (offset,
length) and the job's status stay in memory; the output is then written by
reading the lines back one at a time.

The spool is an anonymous temporary file (``tempfile.TemporaryFile``: on
POSIX it has no name from the start) beside the output file, on the disk the
output goes to anyway rather than in a ``/tmp`` that may live in RAM. It is
created 0600, like every file the client writes (its content is your
answers), and closing it, however the command ends, frees it: even a crash
leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import sys
from array import array
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryFile
from typing import BinaryIO

from openbeepboop_schemas import NOT_FOUND, JobStatus, PollEntry

from openbeepboop._batch_files import output_line
from openbeepboop._files import PRIVATE_DIR_MODE


def status_of(line: dict[str, object]) -> str:
    """The job status an output line was written for."""
    if line.get("response") is not None:
        return JobStatus.COMPLETED.value
    error = line.get("error")
    cancelled = isinstance(error, dict) and error.get("code") == "cancelled"
    return JobStatus.CANCELLED.value if cancelled else JobStatus.FAILED.value


class ResultSpool:
    """Output lines by job id, on disk; in memory a few bytes per job besides its id.

    The record of a job is a slot in parallel arrays rather than objects of
    its own, since there is one per job of the id map.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._slots: dict[str, int] = {}
        self._statuses: list[str] = []
        #: Where each job's line lies in the spool; -1 while it has none.
        self._offsets = array("q")
        self._lengths = array("q")
        #: 1 where the line is an earlier run's, kept as it was (custom_id included).
        self._earlier = bytearray()

    def add(self, entry: PollEntry) -> None:
        """Take in a job's latest entry: its output line is spooled once it is finished."""
        line = output_line("", entry)
        if line is None:
            self._record(entry.id, entry.status, -1, 0, earlier=False)
            return
        line["custom_id"] = None  # the id map's, filled in when the line is read back
        self._put(entry.id, entry.status, line, earlier=False)

    def add_all(self, entries: Iterable[PollEntry]) -> None:
        """:meth:`add` each of ``entries``."""
        for entry in entries:
            self.add(entry)

    def keep_earlier(self, job_id: str, line: dict[str, object]) -> None:
        """Use the line an earlier run wrote for ``job_id``, as it was, instead of any other."""
        self._put(job_id, status_of(line), line, earlier=True)

    def status(self, job_id: str) -> str | None:
        """The job's status as last seen; None if it was never seen."""
        slot = self._slots.get(job_id)
        return None if slot is None else self._statuses[slot]

    def has_line(self, job_id: str) -> bool:
        """True once the job's output line is spooled (it is finished)."""
        slot = self._slots.get(job_id)
        return slot is not None and self._offsets[slot] >= 0

    def is_gone(self, job_id: str) -> bool:
        """True when the server does not know the job (or was never asked about it)."""
        return self.status(job_id) in (None, NOT_FOUND)

    def line(self, job_id: str, custom_id: str) -> tuple[str, dict[str, object]] | None:
        """The job's output line for ``custom_id`` and the status it was written for.

        Read back from the spool, so only this one line is held. None while the
        job is unfinished.
        """
        slot = self._slots.get(job_id)
        if slot is None or self._offsets[slot] < 0:
            return None
        self._handle.seek(self._offsets[slot])
        line = json.loads(self._handle.read(self._lengths[slot]))
        if not self._earlier[slot]:
            line["custom_id"] = custom_id
        return self._statuses[slot], line

    def _put(self, job_id: str, status: str, line: dict[str, object], *, earlier: bool) -> None:
        data = json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode()
        # A read may have moved the position; a write cut short by Ctrl-C may
        # have left bytes no record points at: either way, append at the end.
        offset = self._handle.seek(0, os.SEEK_END)
        self._handle.write(data)
        self._record(job_id, status, offset, len(data), earlier=earlier)

    def _record(self, job_id: str, status: str, offset: int, length: int, *, earlier: bool) -> None:
        # Interned: a few distinct statuses, instead of a string per job.
        status = sys.intern(status)
        slot = self._slots.get(job_id)
        if slot is None:
            self._slots[job_id] = len(self._statuses)
            self._statuses.append(status)
            self._offsets.append(offset)
            self._lengths.append(length)
            self._earlier.append(earlier)
            return
        self._statuses[slot] = status
        self._offsets[slot] = offset
        self._lengths[slot] = length
        self._earlier[slot] = earlier


@contextmanager
def open_spool(folder: Path) -> Iterator[ResultSpool]:
    """A new, empty spool in ``folder`` (made 0700 if missing), freed when the block ends."""
    folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    with TemporaryFile(dir=folder, prefix=".results.", suffix=".spool") as handle:
        yield ResultSpool(handle)
