"""Reading an activation store: a `manifest.json` and `shard-NNNNN.safetensors` files.

Each shard holds, for a contiguous range of sentences, one `[rows, d]` tensor per hook point (one row per
word, in corpus order) plus `sentence_index` and `word_index` `[rows]`; its safetensors metadata carries
the shard's sentences as JSON, so top-activating examples need nothing but the store.

A store is untrusted input: the manifest is checked against a schema when the store is opened (one
`InputError` naming the file and the key), shard names must be plain file names inside the store
directory, and every shard is read whole into memory, its size and sha256 checked against the manifest
while reading (one pass over the bytes), before its tensors are parsed from those same bytes; their shapes
and the shard's metadata are then checked against the manifest.

A store records the model it was extracted from (`provenance`); `ActivationStore(path, model=m)` or
`store.check_model(m)` refuses a store made with another model (`lmscope.model.provenance`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lmscope.errors import InputError
from lmscope.model.provenance import check_provenance, check_record

log = logging.getLogger(__name__)

FORMAT = "lmscope.activations/1"
MANIFEST = "manifest.json"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


@dataclass(frozen=True)
class Shard:
    """One shard's activations (only the points and neurons asked for) and where its rows come from."""

    index: int
    activations: dict[str, Tensor]
    sentence_index: Tensor
    word_index: Tensor
    sentences: list[list[str]]
    first_sentence: int


_HEADER_KEYS: dict[str, type | tuple[type, ...]] = {
    "format": str, "status": str, "model": dict, "points": list, "dims": dict, "n_rows": int, "n_sentences": int}
_SHARD_KEYS: dict[str, type | tuple[type, ...]] = {
    "index": int, "file": str, "sha256": str, "first_sentence": int, "n_sentences": int}


def _kind(t: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", list: "a list", dict: "an object"}
    return " or ".join(names.get(x, x.__name__) for x in (t if isinstance(t, tuple) else (t,)))


def _check_keys(obj: Any, keys: dict[str, type | tuple[type, ...]], where: str, manifest: Path) -> None:
    for key, t in keys.items():
        if key not in obj:
            raise InputError(f"{manifest}: key {where}{key!r} is missing")
        value = obj[key]
        if not isinstance(value, t) or (isinstance(value, bool) and t is int):
            raise InputError(f"{manifest}: key {where}{key!r} must be {_kind(t)}, not {type(value).__name__}")


def check_manifest(manifest: Any, path: Path) -> None:
    """The schema of `manifest.json` (`path`): required keys and their types, and shard names confined to
    the store directory; one InputError naming the file and the key."""
    if not isinstance(manifest, dict):
        raise InputError(f"{path}: must be a JSON object, not {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise InputError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    _check_keys(manifest, _HEADER_KEYS, "", path)
    if not all(isinstance(p, str) for p in manifest["points"]):
        raise InputError(f"{path}: key 'points' must be a list of strings")
    for p in manifest["points"]:
        d = manifest["dims"].get(p)
        if not isinstance(d, int) or isinstance(d, bool) or d < 0:
            raise InputError(f"{path}: key 'dims' must give a non-negative integer for point {p!r}")
    for key in ("n_rows", "n_sentences"):
        if manifest[key] < 0:
            raise InputError(f"{path}: key {key!r} must be a non-negative integer")
    check_record(manifest.get("provenance"), str(path))
    if manifest["status"] != "complete":
        return
    if not isinstance(manifest.get("shards"), list):
        raise InputError(f"{path}: key 'shards' is missing or not a list")
    for i, entry in enumerate(manifest["shards"]):
        if not isinstance(entry, dict):
            raise InputError(f"{path}: key 'shards'[{i}] must be an object")
        _check_keys(entry, _SHARD_KEYS, f"'shards'[{i}].", path)
        if "size" in entry and (not isinstance(entry["size"], int) or isinstance(entry["size"], bool)):
            raise InputError(f"{path}: key 'shards'[{i}].'size' must be an integer")
        if any(entry[k] < 0 for k in ("index", "first_sentence", "n_sentences")):
            raise InputError(f"{path}: key 'shards'[{i}] has a negative index or count")
        name = entry["file"]
        if (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
                or Path(name).is_absolute() or Path(name).name != name):
            raise InputError(f"{path}: key 'shards'[{i}].'file' {name!r} is not a file name inside the store "
                             "(no directories, '..' or absolute paths)")


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def parse_safetensors(data: bytearray) -> tuple[dict[str, Tensor], dict[str, str]]:
    """`(tensors, metadata)` of a safetensors file held in `data`; the tensors are views of `data` (no copy).
    Raises ValueError (or KeyError/TypeError) on anything malformed: offsets are checked against the buffer."""
    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError("header length past the end of the file")
    header = json.loads(bytes(data[8:8 + n]))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    start, tensors = 8 + n, {}
    for name, info in header.items():
        dtype, shape, (lo, hi) = _DTYPES[info["dtype"]], [int(x) for x in info["shape"]], info["data_offsets"]
        count = int(np.prod(shape)) if shape else 1
        if not 0 <= lo <= hi <= len(data) - start or hi - lo != count * dtype.itemsize:
            raise ValueError(f"tensor {name!r} has data offsets outside the file or of the wrong size")
        flat = torch.frombuffer(data, dtype=dtype, count=count, offset=start + lo) if count else torch.empty(0)
        tensors[name] = flat.to(dtype).reshape(shape)
    return tensors, metadata


def read_shard_bytes(path: Path, entry: dict[str, Any], verified: dict[str, tuple[int, ...]] | None = None
                     ) -> bytearray:
    """The bytes of shard `path`, read once and checked against the manifest `entry` (size, sha256).

    `verified` (file name -> (inode, size, mtime_ns)) remembers shards already hashed by this reader: an
    unchanged file is not hashed again when a command reads the store several times (rows, then sentences)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = bytearray(st.st_size)
            del data[f.readinto(data):]  # one read into one buffer (a file shrinking meanwhile is cut here)
    except FileNotFoundError:
        raise InputError(f"{path}: shard listed in {MANIFEST} is missing") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read shard ({err.strerror or err})") from None
    size = entry.get("size")
    if size is not None and len(data) != size:
        raise InputError(f"{path}: {len(data)} bytes, {MANIFEST} says {size} (truncated or replaced)")
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    if verified is not None and verified.get(entry["file"]) == stamp and len(data) == st.st_size:
        return data
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise InputError(f"{path}: sha256 does not match {MANIFEST} (the shard was changed after extraction)")
    if verified is not None:
        verified[entry["file"]] = stamp
    return data


class ActivationStore:
    """A finished (or partly written) store on disk; opening it reads only the manifest."""

    def __init__(self, path: str | Path, *, model: Any = None, allow_mismatch: bool = False) -> None:
        """Open the store at `path` (the manifest is read and schema-checked). `model`: the HookedModel the
        store will be used with; it is checked against the store's provenance (`check_model`)."""
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if not manifest.exists():
            raise InputError(f"{self.path}: not an activation store (no {MANIFEST})")
        try:
            self.manifest: dict[str, Any] = json.loads(manifest.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise InputError(f"{manifest}: not valid JSON ({err.msg}, line {err.lineno})") from None
        except UnicodeDecodeError:
            raise InputError(f"{manifest}: not UTF-8 text") from None
        except RecursionError:
            raise InputError(f"{manifest}: JSON nested too deeply") from None
        except OSError as err:
            raise InputError(f"{manifest}: cannot read ({err.strerror or err})") from None
        check_manifest(self.manifest, manifest)
        self._verified: dict[str, tuple[int, ...]] = {}
        if model is not None:
            self.check_model(model, allow_mismatch=allow_mismatch)

    # --- description --------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    @property
    def points(self) -> list[str]:
        return list(self.manifest["points"])

    @property
    def dims(self) -> dict[str, int]:
        return dict(self.manifest["dims"])

    @property
    def n_rows(self) -> int:
        return int(self.manifest["n_rows"])

    @property
    def n_sentences(self) -> int:
        return int(self.manifest["n_sentences"])

    def neuron_units(self, points: Sequence[str] | None = None) -> list[str]:
        """Unit names of the columns of `to_torch(points)`, e.g. `blocks.1.mlp.hook_post:7`."""
        return [f"{p}:{i}" for p in self._points(points) for i in range(self.dims[p])]

    def _points(self, points: Sequence[str] | None) -> list[str]:
        if points is None:
            return self.points
        unknown = [p for p in points if p not in self.dims]
        if unknown:
            raise InputError(f"points: {unknown[0]!r} is not in this store; it has {', '.join(self.points)}")
        return list(points)

    def _require_complete(self) -> None:
        if not self.complete:
            raise InputError(f"{self.path}: the extraction has not finished; run the same extract command again")

    # --- reading ------------------------------------------------------------------------------
    def iter_shards(self, points: Sequence[str] | None = None,
                    neurons: Sequence[int] | dict[str, Sequence[int]] | None = None) -> Iterator[Shard]:
        """Shards in corpus order, each holding only `points` and, if given, the `neurons` columns."""
        self._require_complete()
        names = self._points(points)
        for entry in self.manifest["shards"]:
            path = self.path / entry["file"]
            data = read_shard_bytes(path, entry, self._verified)
            try:
                tensors, metadata = parse_safetensors(data)
                meta = json.loads(metadata.get("lmscope", "{}"))
            except Exception as err:  # safetensors raises its own error types; any of them means a bad file
                msg = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise InputError(f"{path}: not a valid safetensors shard ({msg})") from None
            self._check_shard(path, tensors, meta, names)
            acts = {}
            for p in names:
                cols = neurons.get(p) if isinstance(neurons, dict) else neurons
                t = tensors[p]
                if cols is not None:
                    c = np.asarray(list(cols), dtype=np.int64)
                    if c.size and (c.min() < 0 or c.max() >= self.dims[p]):
                        raise InputError(f"neurons: an index is outside 0..{self.dims[p] - 1} for point {p!r}")
                acts[p] = t[:, list(cols)] if cols is not None else t
            yield Shard(entry["index"], acts, tensors["sentence_index"], tensors["word_index"],
                        meta.get("sentences", []), meta.get("first_sentence", 0))

    def _check_shard(self, path: Path, tensors: dict[str, Tensor], meta: Any, names: Sequence[str]) -> None:
        """A parsed shard against the manifest: the tensors asked for exist with `[rows, dims[point]]` shapes,
        row indices are `[rows]`, and the metadata's sentences are lists of strings (one InputError)."""
        missing = [k for k in (*names, "sentence_index", "word_index") if k not in tensors]
        if missing:
            raise InputError(f"{path}: no tensor {missing[0]!r}")
        if not isinstance(meta, dict):
            raise InputError(f"{path}: metadata is not a JSON object")
        rows = tensors["sentence_index"].shape
        if len(rows) != 1 or tensors["word_index"].shape != rows:
            raise InputError(f"{path}: sentence_index and word_index must be two [rows] tensors of one length")
        for p in names:
            if tuple(tensors[p].shape) != (rows[0], self.dims[p]):
                raise InputError(f"{path}: tensor {p!r} has shape {tuple(tensors[p].shape)}, expected "
                                 f"({rows[0]}, {self.dims[p]}) from {MANIFEST}")
        sents, first = meta.get("sentences", []), meta.get("first_sentence", 0)
        if not isinstance(sents, list) or not all(
                isinstance(s, list) and all(isinstance(w, str) for w in s) for s in sents):
            raise InputError(f"{path}: metadata 'sentences' must be a list of lists of words")
        if isinstance(first, bool) or not isinstance(first, int) or first < 0:
            raise InputError(f"{path}: metadata 'first_sentence' must be a non-negative integer")

    # --- provenance ---------------------------------------------------------------------------
    @property
    def provenance(self) -> dict[str, Any] | None:
        """The model this store was extracted from: the manifest's `provenance` record if it has one
        (`lmscope.model.provenance.provenance_record`), else its older `model` entry (id, weights_sha256)."""
        return self.manifest.get("provenance") or self.manifest.get("model")

    @property
    def prepend_bos(self) -> bool | None:
        """Whether the extraction put a BOS before each sentence (None if the store does not say): load the
        model that uses the store with `prepend_bos=store.prepend_bos` so that it sees what the store saw."""
        value = (self.provenance or {}).get("prepend_bos")
        return value if isinstance(value, bool) else None

    def check_model(self, model: Any, *, allow_mismatch: bool = False) -> None:
        """Refuse to use this store with `model` if it was extracted from another model (dimensions or weights
        differ); `allow_mismatch` turns a weights mismatch into a logged warning. See `check_provenance`.
        The store's points and widths are checked against the model first, so even a store that records no
        provenance is refused when its shapes cannot be this model's."""
        from lmscope.activations.collect import point_dim

        try:
            model.check_names(self.points)
        except InputError as err:
            raise InputError(f"activation store {self.path} was made with another model: {err}") from None
        for p in self.points:
            if point_dim(model, p) != self.dims[p]:
                raise InputError(f"activation store {self.path}: point {p!r} has {self.dims[p]} columns, "
                                 f"{model.name} gives {point_dim(model, p)}; it was made with another model")
        check_provenance(self.provenance, model, what=f"activation store {self.path}", allow_mismatch=allow_mismatch)
        if self.prepend_bos is not None and self.prepend_bos != model.prepend_bos:
            log.warning("activation store %s was extracted %s a BOS, but %s runs %s one; load it with "
                        "prepend_bos=%s to match", self.path, "with" if self.prepend_bos else "without", model.name,
                        "with" if model.prepend_bos else "without", self.prepend_bos)

    def load(self, points: Sequence[str] | None = None,
             neurons: Sequence[int] | dict[str, Sequence[int]] | None = None) -> dict[str, Tensor]:
        """`{point: [n_rows, d]}` for the points (and neuron columns) asked for, read shard by shard."""
        parts: dict[str, list[Tensor]] = {p: [] for p in self._points(points)}
        for shard in self.iter_shards(points, neurons):
            for p, t in shard.activations.items():
                parts[p].append(t)
        return {p: torch.cat(ts) for p, ts in parts.items()}

    def to_torch(self, points: Sequence[str] | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """All rows as one `[n_rows, sum of d]` tensor, points side by side (see `neuron_units`)."""
        loaded = self.load(points)
        return torch.cat([loaded[p].to(dtype) for p in self._points(points)], dim=1)

    def to_numpy(self, points: Sequence[str] | None = None) -> np.ndarray:
        return self.to_torch(points).numpy()

    def row_index(self) -> tuple[Tensor, Tensor]:
        """`(sentence_index, word_index)` of every row."""
        sents, words = [], []
        for shard in self.iter_shards(points=[]):
            sents.append(shard.sentence_index)
            words.append(shard.word_index)
        return torch.cat(sents), torch.cat(words)

    def sentences(self) -> list[list[str]]:
        """The words of every sentence, from the shards' metadata."""
        out: list[list[str]] = []
        for shard in self.iter_shards(points=[]):
            out.extend(shard.sentences)
        return out

    def __repr__(self) -> str:
        status = "complete" if self.complete else "incomplete"
        return (f"ActivationStore({str(self.path)!r}, {status}, rows={self.manifest.get('n_rows')}, "
                f"points={self.points})")
