"""``write_private_file``: mode 0600, whole content, and a failure changes nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from openbeepboop import _files
from openbeepboop._files import write_private_file


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_the_text_with_mode_0600_into_a_new_private_directory(tmp_path: Path) -> None:
    path = tmp_path / "new" / "secret.toml"
    write_private_file(path, 'api_key = "sk-é"\n')
    assert path.read_text(encoding="utf-8") == 'api_key = "sk-é"\n'
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    write_private_file(path, "replaced\n")
    assert path.read_text(encoding="utf-8") == "replaced\n"
    assert mode(path) == 0o600
    assert os.listdir(path.parent) == ["secret.toml"]


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    write_private_file(tmp_path / "f", "x")
    assert mode(tmp_path) == 0o755


def test_a_loose_umask_does_not_loosen_the_file(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private_file(tmp_path / "f", "x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "f") == 0o600


def test_a_failed_rename_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.toml"
    write_private_file(path, "old\n")

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_files.os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        write_private_file(path, "new\n")
    assert path.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(tmp_path) == ["c.toml"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    write_private_file(path, "old\n")
    with pytest.raises(UnicodeEncodeError):
        write_private_file(path, "half \ud800 written")  # a lone surrogate is not UTF-8
    assert path.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(tmp_path) == ["c.toml"]


def test_a_directory_that_refuses_fsync_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync
    refused: list[int] = []

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            refused.append(fd)
            raise OSError(22, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(_files.os, "fsync", fsync)
    write_private_file(tmp_path / "f", "x")
    assert refused  # the directory was fsync'd (and its refusal ignored)
    assert (tmp_path / "f").read_text(encoding="utf-8") == "x"
