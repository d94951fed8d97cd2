"""Activations of a store lined up with token labels: the `X, y` every ranker and evaluation takes.

`X` is filled shard by shard into one preallocated array holding only the kept rows, so loading costs one
copy of them (plus one shard), not the whole store twice. With `split`, the rows come train part first, so the
parts of that split are slices of `X` (`NeuronDataset.part` gives views, not copies); every split and every
number computed from it is the same as in corpus order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lmscope.activations import ActivationStore
from lmscope.data.labels import LabeledCorpus, control_task, select_words, train_test_split_sentences
from lmscope.errors import InputError


@dataclass(frozen=True)
class NeuronDataset:
    """`X [rows, neurons]` (word activations), `y [rows]` (label ids) and what the columns and rows are."""

    X: np.ndarray
    y: np.ndarray
    label_names: list[str]
    units: list[str]
    sentence_index: np.ndarray
    words: list[str]
    control: np.ndarray | None = None

    def split(self, test_size: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of a train/test split by sentence (no sentence on both sides)."""
        is_test = _is_test(self.sentence_index, test_size, seed)
        return np.flatnonzero(~is_test), np.flatnonzero(is_test)

    def part(self, rows: np.ndarray) -> np.ndarray:
        """`X[rows]`: a view where `rows` are consecutive (a part of the split the rows are ordered by), else a
        copy."""
        return _part(self.X, rows)


def _part(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows)
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and bool(np.all(np.diff(rows) == 1)):
        return X[int(rows[0]) : int(rows[-1]) + 1]
    return X[rows]


def _is_test(sentence_index: np.ndarray, test_size: float, seed: int) -> np.ndarray:
    """Which rows fall in the test part of a split by sentence (`NeuronDataset.split`)."""
    sentences = np.unique(sentence_index)
    rng = np.random.default_rng(seed)
    test = rng.choice(sentences, size=max(1, round(test_size * len(sentences))), replace=False)
    return np.isin(sentence_index, test)


def read_rows(store: ActivationStore, rows: np.ndarray, points: Sequence[str] | None = None) -> np.ndarray:
    """`[len(rows), neurons]` float32: the store's rows `rows` (any order), points side by side as in
    `store.to_numpy`, read shard by shard into one preallocated array."""
    store.neuron_units(points)  # refuses a point the store does not have
    names = store.points if points is None else list(points)
    dims = [store.dims[p] for p in names]
    out = np.empty((len(rows), sum(dims)), dtype=np.float32)
    dest = np.full(store.n_rows, -1, dtype=np.int64)
    dest[np.asarray(rows, dtype=np.int64)] = np.arange(len(rows))
    offset = 0
    for shard in store.iter_shards(names):
        n = len(shard.sentence_index)
        where = dest[offset : offset + n]
        keep = where >= 0
        if keep.any():
            pick = torch.from_numpy(keep)
            col = 0
            for p, d in zip(names, dims, strict=True):
                out[where[keep], col : col + d] = shard.activations[p][pick].to(torch.float32).numpy()
                col += d
        offset += n
        del shard
    return out


def check_alignment(store: ActivationStore, corpus: LabeledCorpus) -> None:
    """Refuse labels whose sentences are not the store's, naming the first sentence that differs."""
    stored = store.sentences()
    if len(stored) != corpus.n_sentences:
        raise InputError(f"{corpus.source}: {corpus.n_sentences} labelled sentences, but the store at "
                         f"{store.path} holds {len(stored)}; label the corpus that was extracted")
    for i, (a, b) in enumerate(zip(stored, corpus.sentences, strict=True)):
        if list(a) != list(b):
            raise InputError(f"{corpus.source}: sentence {i + 1} is {' '.join(b)[:60]!r}, but the store has "
                             f"{' '.join(a)[:60]!r}; label the corpus that was extracted")


def load_dataset(store: ActivationStore, corpus: LabeledCorpus, *, points: Sequence[str] | None = None,
                 min_count: int = 1, balance: bool = False, max_per_class: int | None = None,
                 control: bool = True, seed: int = 0, split: tuple[float, int] | None = None) -> NeuronDataset:
    """Rows of the store with their labels (optionally rare classes left out and classes balanced).

    With `control`, each row also gets a control-task label (a fixed random label per word type, drawn
    from the task's label distribution, Hewitt & Liang 2019) for selectivity. With `split=(test_size,
    seed)`, rows are ordered train part first (each part in corpus order), so that `data.split(test_size,
    seed)` returns consecutive rows and `data.part` views.
    """
    check_alignment(store, corpus)
    keep = select_words(corpus, min_count=min_count, balance=balance, max_per_class=max_per_class, seed=seed)
    sentence_of_row = np.repeat(np.arange(corpus.n_sentences), [len(s) for s in corpus.sentences])
    rows = np.flatnonzero(keep)
    if split is not None and len(rows):
        is_test = _is_test(sentence_of_row[rows], *split)
        rows = np.concatenate([rows[~is_test], rows[is_test]])
    X = read_rows(store, rows, points)
    y_all, names = corpus.label_ids()
    y, present = y_all[rows], sorted(set(y_all[rows].tolist()))
    remap = np.full(len(names), -1)
    remap[present] = np.arange(len(present))
    ctrl = None
    if control:
        yc, _ = control_task(corpus, seed=seed).label_ids(names)
        ctrl = yc[rows]
    words = corpus.flat_words()
    return NeuronDataset(X, remap[y], [names[i] for i in present], store.neuron_units(points),
                         sentence_of_row[rows], [words[i] for i in rows.tolist()], ctrl)


__all__ = ["NeuronDataset", "check_alignment", "load_dataset", "train_test_split_sentences"]
