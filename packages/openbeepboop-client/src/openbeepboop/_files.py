"""The client's one way to write a file: atomically, readable by the owner only.

``setup`` writes ``client_config.toml`` (it holds an API key) with it, and the
batch commands write their id maps and result files with it too: those hold
job ids (enough, with the key, to read the answers) and the model's answers to
your prompts, which are as private as the prompts. So every file the client
writes is 0600 and there is no ``mode`` parameter; ``chmod`` a result file to
share it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

#: Mode of every file the client writes.
PRIVATE_FILE_MODE = 0o600
#: Mode of a parent directory the writer has to create.
PRIVATE_DIR_MODE = 0o700


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, with mode 0600 from the first byte.

    See :func:`private_file_writer`, which this writes through in one piece.
    """
    with private_file_writer(path) as handle:
        handle.write(text)


def write_private_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` as it is to ``path``, like :func:`write_private_file`.

    For content the server made (a batch's output file), which is kept byte
    for byte rather than decoded and encoded again.
    """
    with private_file_writer(path) as handle:
        handle.buffer.write(data)


@contextmanager
def private_file_writer(path: Path) -> Iterator[TextIO]:
    """A text handle whose content replaces ``path`` atomically, mode 0600, when the block ends.

    What is written goes to a temporary file in the same directory, created
    0600, which is flushed and fsync'd before it is renamed over ``path``; the
    directory is then fsync'd so the rename itself survives a crash. A crash
    leaves the old file or the new one, never half of one; an exception out
    of the block removes the temporary file and leaves the old file as it was.
    The content can thus be written piece by piece, as it becomes known,
    without being held in memory whole.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if hasattr(os, "fchmod"):  # mkstemp already made it 0600; Windows has no fchmod
                os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(folder)


def _fsync_directory(folder: Path) -> None:
    # Not every platform lets a directory be opened or fsync'd (Windows does neither).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
