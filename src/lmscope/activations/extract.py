"""Streaming extraction into an ActivationStore: length-bucketed batches, sharded, resumable, distributed.

The corpus is cut into shards of `shard_sentences` consecutive sentences. A shard is computed from its
sentences alone (sorted by length, batched by a token budget), so its bytes do not depend on which
process computes it or whether the run was interrupted: a resumed run skips finished shards and ends with
the same store as an uninterrupted one. Shards are written by a background thread to a temporary name and
renamed when complete. Under `torchrun`, rank r computes shards r, r + N, ...; rank 0 writes the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lmscope.activations.align import AGGREGATIONS
from lmscope.activations.collect import point_dim, word_activations
from lmscope.activations.corpus import file_sha256
from lmscope.activations.store import FORMAT, MANIFEST, ActivationStore, shard_name
from lmscope.distributed import barrier, dist_info, on_rank0
from lmscope.errors import InputError, bad_argument
from lmscope.fileio import atomic_write_json, default_file_mode
from lmscope.model.hooked import HookedModel
from lmscope.model.provenance import provenance_record, weights_sha256

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ExtractConfig:
    """What to extract and how; everything here must match when a run resumes."""

    points: tuple[str, ...]
    aggregate: str = "last"
    dtype: str = "float32"
    batch_tokens: int = 4096
    shard_sentences: int = 2048


def _corpus_sha256(sentences: Sequence[Sequence[str]]) -> str:
    return hashlib.sha256(json.dumps(sentences, ensure_ascii=False).encode()).hexdigest()


def _validate(model: HookedModel, cfg: ExtractConfig) -> dict[str, int]:
    if cfg.aggregate not in AGGREGATIONS:
        raise bad_argument("aggregate", f"one of {', '.join(AGGREGATIONS)}", cfg.aggregate)
    if cfg.dtype not in DTYPES:
        raise bad_argument("dtype", f"one of {', '.join(DTYPES)}", cfg.dtype)
    for name in ("batch_tokens", "shard_sentences"):
        if getattr(cfg, name) < 1:
            raise bad_argument(name, "a positive integer", getattr(cfg, name))
    if not cfg.points:
        raise InputError("points: expected at least one hook name", arg="points")
    model.check_names(cfg.points)
    dims = {}
    for p in cfg.points:
        if p.endswith("hook_pattern"):
            raise InputError(f"points: {p!r} is an attention pattern, not a per-token activation", arg="points")
        dims[p] = point_dim(model, p)
    return dims


def _header(model: HookedModel, model_id: str, sentences: Sequence[Sequence[str]], cfg: ExtractConfig,
            dims: dict[str, int], corpus_path: str | None) -> dict[str, Any]:
    return {
        "format": FORMAT, "status": "incomplete",
        "model": {"id": model_id, "family": model.cfg.family, "weights_sha256": weights_sha256(model),
                  "prepend_bos": model.prepend_bos},
        "provenance": {**provenance_record(model), "model_id": model_id},
        "points": list(cfg.points), "dims": dims, "dtype": cfg.dtype, "aggregation": cfg.aggregate,
        "batch_tokens": cfg.batch_tokens, "shard_sentences": cfg.shard_sentences,
        "n_sentences": len(sentences), "n_rows": sum(len(s) for s in sentences),
        "corpus": {"path": corpus_path, "sha256": _corpus_sha256(sentences),
                   "file_sha256": file_sha256(corpus_path) if corpus_path else None},
    }


_MUST_MATCH = (("model", "weights_sha256"), ("model", "prepend_bos"), ("points",), ("dims",), ("dtype",),
               ("aggregation",), ("batch_tokens",), ("shard_sentences",), ("corpus", "sha256"))


def _check_resume(out: Path, header: dict[str, Any]) -> dict[str, Any] | None:
    """The existing manifest if `out` is a store of this very extraction, None if `out` is new/empty."""
    manifest = out / MANIFEST
    if not manifest.exists():
        ours = re.compile(rf"^(\.shard-.*\.tmp|{re.escape(LOCK)})$")  # a killed run's leftovers and the lock
        if out.exists() and any(not ours.match(p.name) for p in out.iterdir()):
            raise InputError(f"out_dir: {out} exists and is not an activation store; choose a new directory",
                             arg="out_dir")
        return None
    existing = ActivationStore(out).manifest
    for path in _MUST_MATCH:
        old: Any = existing
        new: Any = header
        for key in path:
            old = old.get(key) if isinstance(old, dict) else None
            new = new.get(key) if isinstance(new, dict) else None
        if old != new:
            what = ".".join(path)
            raise InputError(f"out_dir: {out} is a store of a different extraction ({what} is {old!r}, this "
                             f"run's is {new!r}); choose a new directory", arg="out_dir")
    return existing


LOCK = ".lmscope-write.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@contextmanager
def store_lock(out: Path) -> Iterator[None]:
    """One writer per store: `out/.lmscope-write.lock` holds `pid@host` while a process writes it. A second
    writer is refused in one line (before it could delete the first one's temporary shards); a lock left by a
    process that is gone (same host, pid not running) is taken over with a warning."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock, me = out / LOCK, f"{os.getpid()}@{socket.gethostname()}"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock.read_text(errors="replace").strip()
            pid, _, host = holder.partition("@")
            if host == socket.gethostname() and pid.isdecimal() and not _alive(int(pid)):
                log.warning("%s: taking over the lock of process %s, which is gone", out, pid)
                lock.unlink(missing_ok=True)
                continue
            raise InputError(f"{out}: another lmscope process ({holder or 'unknown'}) is writing this store; wait "
                             f"for it to finish (if it is gone, remove {lock})") from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:
        raise InputError(f"{out}: could not take the write lock {lock}")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        if made and not any(out.iterdir()):  # a refused run leaves no empty directory behind
            out.rmdir()


def _prepare(out: Path, header: dict[str, Any], *, write_header: bool = True) -> str:
    """Check a store being resumed, clean a killed run's temporary files, write the header manifest.

    `write_header=False` leaves the header to the caller (one process: the shard writer writes it before
    any shard, so its fsync overlaps the first batches instead of delaying them).
    """
    existing = _check_resume(out, header)
    if existing is not None and existing.get("status") == "complete":
        return "complete"
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".shard-*.tmp"):  # left by a killed run; never under a final name
        stale.unlink()
    if write_header:
        atomic_write_json(out / MANIFEST, header, overwrite=True)
    return "started"


class _ShardWriter:
    """Runs the store's writes in order on a background thread; at most one shard waits in memory.

    Shards go to a temporary name and are renamed when complete; each one's sha256 is taken right after it
    is written (for the manifest), so only shards of an earlier run are read back at the end. After a
    failed write the later ones are skipped and the error is raised in the caller.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.sha256: dict[int, str] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.queue.get()) is not None:
            if self.error is None:
                try:
                    job()
                except BaseException as err:  # surfaced to the caller by submit()/close()
                    self.error = err

    def _write_shard(self, index: int, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{shard_name(index)}.", suffix=".tmp", dir=self.out)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=metadata)
            os.chmod(tmp, default_file_mode())
            self.sha256[index] = file_sha256(tmp)
            os.replace(tmp, self.out / shard_name(index))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def submit(self, job: Callable[[], Any]) -> None:
        if self.error:
            raise self.error
        self.queue.put(job)

    def put(self, index: int, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        self.submit(lambda: self._write_shard(index, tensors, metadata))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error:
            raise self.error


def extract(model: HookedModel, sentences: Sequence[Sequence[str]], out_dir: str | Path, cfg: ExtractConfig, *,
            model_id: str | None = None, corpus_path: str | None = None,
            progress: Progress | None = None) -> ActivationStore:
    """Extract `cfg.points` for every word of `sentences` into the store at `out_dir` (resuming if present).
    One process writes a store at a time (`store_lock`; under torchrun the ranks share the one launch)."""
    dims = _validate(model, cfg)
    if not sentences or any(len(s) == 0 for s in sentences):
        raise InputError("corpus: expected non-empty sentences")
    out = Path(out_dir)
    rank, world = dist_info()
    if world == 1:
        with store_lock(out):
            return _extract(model, sentences, out, cfg, dims, rank, world, model_id, corpus_path, progress)
    return _extract(model, sentences, out, cfg, dims, rank, world, model_id, corpus_path, progress)


def _extract(model: HookedModel, sentences: Sequence[Sequence[str]], out: Path, cfg: ExtractConfig,
             dims: dict[str, int], rank: int, world: int, model_id: str | None, corpus_path: str | None,
             progress: Progress | None) -> ActivationStore:
    header = _header(model, model_id or model.name, sentences, cfg, dims, corpus_path)
    # under torchrun the header must be on disk before any rank writes a shard: rank 0 writes it at once
    if on_rank0(world, lambda: _prepare(out, header, write_header=world > 1)) == "complete":
        return ActivationStore(out)
    n_shards = -(-len(sentences) // cfg.shard_sentences)
    mine = [i for i in range(rank, n_shards, world) if not (out / shard_name(i)).exists()]
    writer = _ShardWriter(out)
    if world == 1:
        writer.submit(lambda: atomic_write_json(out / MANIFEST, header, overwrite=True))
    corpus_name = corpus_path or "corpus"
    try:
        with torch.inference_mode():
            for done, index in enumerate(mine):
                first = index * cfg.shard_sentences
                chunk = sentences[first: first + cfg.shard_sentences]
                tensors = word_activations(model, chunk, cfg.points, aggregate=cfg.aggregate,  # type: ignore[arg-type]
                                           dtype=DTYPES[cfg.dtype], batch_tokens=cfg.batch_tokens,
                                           first_line=first + 1, corpus_name=corpus_name)
                counts = torch.tensor([len(s) for s in chunk])
                tensors["sentence_index"] = torch.repeat_interleave(torch.arange(first, first + len(chunk)), counts)
                starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
                tensors["word_index"] = torch.arange(len(starts)) - starts
                # one metadata key: safetensors writes its metadata map in no fixed order
                meta = {"lmscope": json.dumps({"first_sentence": first, "sentences": chunk}, ensure_ascii=False)}
                writer.put(index, tensors, meta)
                if progress is not None:
                    progress(done + 1, len(mine))
    finally:
        writer.close()
    barrier(world)
    on_rank0(world, lambda: _finalize(out, header, n_shards, cfg, writer.sha256))
    return ActivationStore(out)


def _finalize(out: Path, header: dict[str, Any], n_shards: int, cfg: ExtractConfig, known: dict[int, str]) -> str:
    """Write the complete manifest; `known` holds the sha256 of shards this process wrote (others are read)."""
    shards = []
    for i in range(n_shards):
        path = out / shard_name(i)
        if not path.exists():
            raise InputError(f"{path}: missing after extraction; run the same command again to resume")
        first = i * cfg.shard_sentences
        shards.append({"index": i, "file": path.name, "sha256": known.get(i) or file_sha256(path),
                       "size": path.stat().st_size,
                       "first_sentence": first,
                       "n_sentences": min(cfg.shard_sentences, header["n_sentences"] - first)})
    atomic_write_json(out / MANIFEST, {**header, "status": "complete", "shards": shards,
                                       "config": asdict(cfg)}, overwrite=True)
    return "complete"
