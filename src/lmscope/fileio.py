"""Atomic, non-clobbering file output shared by every writer in lmscope.

Everything lmscope writes goes to a temporary file in the target directory and is renamed into place
when complete, so an interrupted run never leaves a half-written file under its final name, and a file
the user already has is never replaced unless they asked for it (`overwrite=True`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from lmscope.errors import InputError


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Return `path` as a Path, refusing an existing file unless `overwrite` is set."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise InputError(f"{target}: already exists; pass --overwrite (overwrite=True) to replace it")
    if target.exists() and target.is_dir():
        raise InputError(f"{target}: is a directory, expected a file path")
    return target


def check_output_dir(path: str | os.PathLike[str], *, arg: str = "out_dir", need_bytes: int = 0) -> Path:
    """Refuse, before any work, an output directory lmscope could not write: an existing file, a path under
    a file, a parent that is missing and cannot be made or is not writable, or (with `need_bytes`) a disk
    with less free space than that. Nothing is left behind (a temporary file probes the nearest existing
    directory). Messages name `arg`, the argument `path` came from (the CLI shows its flag)."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise InputError(f"{arg}: {target} is a file, expected a directory", arg=arg)
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{arg}: {target}: {probe} is a file, so no directory can be made under it", arg=arg)
    try:  # the one reliable test (root ignores permission bits; /proc and read-only mounts refuse anyway)
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise InputError(f"{arg}: {target}: {probe} is not writable ({e.strerror or e})", arg=arg) from None
    if need_bytes > 0:
        import shutil

        free = shutil.disk_usage(probe).free
        if free < need_bytes:
            raise InputError(f"{arg}: {target} needs about {need_bytes / 2**20:,.0f} MiB, but {probe} has "
                             f"{free / 2**20:,.0f} MiB free", arg=arg)
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> Path:
    """Write `data` to `path` through a temporary file and a rename."""
    target = check_writable(path, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


@functools.cache
def default_file_mode() -> int:
    """The mode a plain `open()` would give a new file (0o666 less the umask); `mkstemp` gives 0o600.

    Read once: `os.umask` can only be read by setting it, which would race with threads creating files.
    """
    current = os.umask(0)
    os.umask(current)
    return 0o666 & ~current


default_file_mode()  # read at import, before any writer thread exists


def atomic_write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = False) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, overwrite: bool = False) -> Path:
    """Write `obj` as indented JSON to `path` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", overwrite=overwrite)
