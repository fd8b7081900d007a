"""Files only their owner may read, and the folders they go in.

The node config holds keys, and the result spool holds paid-for answers:
both are written under folders made for the owner alone (0700), and the
config atomically with mode 0600.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def make_private_folder(folder: Path) -> None:
    """Create ``folder`` and its missing parents (mode 0700); an existing one is kept.

    A file where a folder should be is a NotADirectoryError naming it
    (``/srv/x is not a directory``): a bare ``mkdir`` says "File exists" when
    that file is ``folder`` itself, which does not say what is wrong.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except (FileExistsError, NotADirectoryError):
        blocker = _first_non_folder(folder)
        if blocker is None:
            raise
        raise NotADirectoryError(
            errno.ENOTDIR, f"{blocker} is not a directory", str(blocker)
        ) from None


def _first_non_folder(folder: Path) -> Path | None:
    """The first of ``folder`` and its parents, from the root down, that exists and is no folder."""
    for candidate in (*reversed(folder.parents), folder):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, readable by its owner only (0600).

    The text goes to a temporary file in the same directory, created with
    mode 0600 before a byte is written, flushed and fsynced, then renamed
    over ``path``; the directory is fsynced so the rename survives a crash.
    A missing directory is created (mode 0700). On failure the temporary
    file is removed and ``path`` is left as it was.
    """
    folder = path.parent
    make_private_folder(folder)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if hasattr(os, "fchmod"):  # mkstemp's 0600 already, made sure of where possible
                os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; platforms that cannot open a folder skip it."""
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
