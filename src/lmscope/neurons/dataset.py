"""Activations of a store lined up with token labels: the `X, y` every ranker and evaluation takes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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
        sentences = np.unique(self.sentence_index)
        rng = np.random.default_rng(seed)
        test = rng.choice(sentences, size=max(1, round(test_size * len(sentences))), replace=False)
        is_test = np.isin(self.sentence_index, test)
        return np.flatnonzero(~is_test), np.flatnonzero(is_test)


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
                 control: bool = True, seed: int = 0) -> NeuronDataset:
    """Rows of the store with their labels (optionally rare classes left out and classes balanced).

    With `control`, each row also gets a control-task label (a fixed random label per word type, drawn
    from the task's label distribution, Hewitt & Liang 2019) for selectivity.
    """
    check_alignment(store, corpus)
    keep = select_words(corpus, min_count=min_count, balance=balance, max_per_class=max_per_class, seed=seed)
    X = store.to_numpy(points)[keep]
    y_all, names = corpus.label_ids()
    sentence_of_row = np.repeat(np.arange(corpus.n_sentences), [len(s) for s in corpus.sentences])
    y, present = y_all[keep], sorted(set(y_all[keep].tolist()))
    remap = np.full(len(names), -1)
    remap[present] = np.arange(len(present))
    ctrl = None
    if control:
        yc, _ = control_task(corpus, seed=seed).label_ids(names)
        ctrl = yc[keep]
    return NeuronDataset(X, remap[y], [names[i] for i in present], store.neuron_units(points),
                         sentence_of_row[keep], [w for w, k in zip(corpus.flat_words(), keep, strict=True) if k],
                         ctrl)


__all__ = ["NeuronDataset", "check_alignment", "load_dataset", "train_test_split_sentences"]
