"""Reading an activation store: a `manifest.json` and `shard-NNNNN.safetensors` files.

Each shard holds, for a contiguous range of sentences, one `[rows, d]` tensor per hook point (one row per
word, in corpus order) plus `sentence_index` and `word_index` `[rows]`; its safetensors metadata carries
the shard's sentences as JSON, so top-activating examples need nothing but the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch import Tensor

from lmscope.errors import InputError

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


class ActivationStore:
    """A finished (or partly written) store on disk; opening it reads only the manifest."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if not manifest.exists():
            raise InputError(f"{self.path}: not an activation store (no {MANIFEST})")
        try:
            self.manifest: dict[str, Any] = json.loads(manifest.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{manifest}: not valid JSON ({err.msg}, line {err.lineno})") from None
        if self.manifest.get("format") != FORMAT:
            raise InputError(f"{manifest}: format {self.manifest.get('format')!r}, expected {FORMAT!r}")

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
            with safe_open(str(self.path / entry["file"]), framework="pt") as f:
                acts = {}
                for p in names:
                    cols = neurons.get(p) if isinstance(neurons, dict) else neurons
                    t = f.get_tensor(p)
                    acts[p] = t[:, list(cols)] if cols is not None else t
                meta = json.loads((f.metadata() or {}).get("lmscope", "{}"))
                yield Shard(entry["index"], acts, f.get_tensor("sentence_index"), f.get_tensor("word_index"),
                            meta.get("sentences", []), int(meta.get("first_sentence", 0)))

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
