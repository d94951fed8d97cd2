"""Runs the `lmscope` CLI, holding still at a chosen point so that a test can kill -9 it there, however fast
the machine is (no sleeps, no races): `python tests/hold_cli.py ARGV...` with, in the environment,

- `LMSCOPE_TEST_HOLD=train:N`: `dict train` holds before its optimisation step N;
- `LMSCOPE_TEST_HOLD=shard:N`: `extract` holds after shard N is complete (renamed to its final name);
- `LMSCOPE_TEST_HOLD=shard-tmp:N`: `extract` holds with shard N written to its temporary name, not yet renamed;

and `LMSCOPE_TEST_HOLD_MARKER=PATH`, the file written (with the point's name) once the run is held. A held
run sleeps until it is killed; a point the run never reaches changes nothing.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any


def _held(point: str) -> None:
    Path(os.environ["LMSCOPE_TEST_HOLD_MARKER"]).write_text(point)
    time.sleep(600)


def _install(spec: str) -> None:
    kind, _, n = spec.partition(":")
    at = int(n)
    if kind == "train":
        from lmscope.dictionary.train import Trainer

        step = Trainer.train_step

        def train_step(self: Trainer, i: int, x: Any, y: Any) -> dict[str, float]:
            if i == at:
                _held(spec)
            return step(self, i, x, y)

        Trainer.train_step = train_step  # type: ignore[method-assign]
    elif kind == "shard":
        from lmscope.activations.extract import _ShardWriter

        write = _ShardWriter._write_shard

        def write_shard(self: _ShardWriter, index: int, tensors: Any, metadata: Any) -> None:
            write(self, index, tensors, metadata)
            if index == at:
                _held(spec)

        _ShardWriter._write_shard = write_shard  # type: ignore[method-assign]
    elif kind == "shard-tmp":
        import importlib

        from lmscope.activations.store import shard_name

        extract = importlib.import_module("lmscope.activations.extract")  # the package exports a function so named

        save = extract.save_file

        def save_file(tensors: Any, path: str, metadata: Any = None) -> None:
            save(tensors, path, metadata=metadata)
            if Path(path).name.startswith(f".{shard_name(at)}."):
                _held(spec)

        extract.save_file = save_file  # type: ignore[attr-defined]
    else:
        raise SystemExit(f"LMSCOPE_TEST_HOLD: unknown point {spec!r}")


if __name__ == "__main__":
    if os.environ.get("LMSCOPE_TEST_HOLD"):
        _install(os.environ["LMSCOPE_TEST_HOLD"])
    from lmscope.cli import main

    main(sys.argv[1:])
