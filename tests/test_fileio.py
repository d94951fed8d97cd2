"""Atomic writes: never clobber a user's file unless asked, never leave a temporary file behind."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from lmscope.errors import InputError
from lmscope.fileio import atomic_write_json, atomic_write_text


def test_refuses_existing_file_and_keeps_it(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("mine")
    with pytest.raises(InputError, match="already exists"):
        atomic_write_text(target, "theirs")
    assert target.read_text() == "mine"
    atomic_write_json(target, {"a": 1}, overwrite=True)
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"^Object of type object is not JSON serializable$"):
        atomic_write_json(tmp_path / "x.json", {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_directory_target_and_permissions(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        atomic_write_text(tmp_path, "x", overwrite=True)
    path = atomic_write_text(tmp_path / "sub" / "f.txt", "hi")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode & stat.S_IRGRP  # readable by others, like any file the user creates (not mkstemp's 0600)


def test_file_sha256_is_the_bytes_digest(tmp_path: Path) -> None:
    import hashlib

    from lmscope.fileio import file_sha256

    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 40_000)  # over one 4 MiB block
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_check_output_dir_refuses_what_cannot_be_written(tmp_path: Path) -> None:
    from lmscope.fileio import check_output_dir

    a_file = tmp_path / "f.txt"
    a_file.write_text("mine")
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"  # parents made later
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    with pytest.raises(InputError, match=r"^out_dir: .*f\.txt is a file, expected a directory$"):
        check_output_dir(a_file)
    with pytest.raises(InputError, match=r"^store: .*sub: .*f\.txt is a file, so no directory can be made under it$"):
        check_output_dir(a_file / "sub", arg="store")
    with pytest.raises(InputError, match=r"^out_dir: /proc/lmscope-out: /proc is not writable"):
        check_output_dir("/proc/lmscope-out")
    with pytest.raises(InputError, match=r"^out_dir: .* needs about [\d,]+ MiB, but .* has [\d,]+ MiB free"):
        check_output_dir(tmp_path, need_bytes=1 << 62)
    assert a_file.read_text() == "mine"
