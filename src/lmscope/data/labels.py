"""Token-label data for neuron probing: one label per word, read from files or the synthetic corpus.

A `LabeledCorpus` holds sentences (lists of words) and one label per word. Readers cover CoNLL-U,
NeuroX's parallel text/label files, JSONL and the synthetic corpus; every malformed line is an
`InputError` naming `FILE:LINE` (see `lmscope.data.formats`).

Transformations never delete words from sentences: words must stay aligned with the activations the
model produced for them. Selecting words (minimum class frequency, class balancing) therefore yields a
boolean mask or index array over the *flat* words (all words of all sentences in order, the rows of a
word-level activation matrix); relabelling (`min_class_frequency`, `control_task`) yields a new corpus
with the same words. Everything random is deterministic from `seed`.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmscope.data.formats import (
    CONLLU_COLUMNS,
    FORMATS,
    SYNTHETIC_LABELS,
    parse_conllu,
    parse_jsonl_labels,
    parse_labels,
    parse_parallel,
    parse_synthetic,
)
from lmscope.data.samples import Sample
from lmscope.errors import InputError

__all__ = [
    "CONLLU_COLUMNS",
    "FORMATS",
    "SYNTHETIC_KINDS",
    "SYNTHETIC_LABELS",
    "LabeledCorpus",
    "balanced_indices",
    "control_task",
    "from_synthetic",
    "min_class_frequency",
    "read_conllu",
    "read_jsonl_labels",
    "read_label_file",
    "read_labels",
    "read_parallel",
    "select_words",
    "train_test_split_sentences",
]

@dataclass(frozen=True)
class LabeledCorpus:
    """Sentences of words with one label per word; `source` says where they came from."""

    sentences: list[list[str]]
    labels: list[list[str]]
    source: str = ""

    def __post_init__(self) -> None:
        """Refuse misaligned or empty sentences: every later step relies on one label per word."""
        if len(self.sentences) != len(self.labels):
            raise InputError(
                f"{self.source or 'corpus'}: {len(self.sentences)} sentences but {len(self.labels)} label lists"
            )
        for i, (words, tags) in enumerate(zip(self.sentences, self.labels, strict=True)):
            if not words:
                raise InputError(f"{self.source or 'corpus'}: sentence {i} is empty; expected at least one word")
            if len(words) != len(tags):
                raise InputError(
                    f"{self.source or 'corpus'}: sentence {i} has {len(words)} words but {len(tags)} labels"
                )

    def __len__(self) -> int:
        """Number of sentences."""
        return len(self.sentences)

    @property
    def n_sentences(self) -> int:
        """Number of sentences."""
        return len(self.sentences)

    @property
    def n_words(self) -> int:
        """Number of words over all sentences (rows of a word-level activation matrix)."""
        return sum(len(words) for words in self.sentences)

    @property
    def label_set(self) -> list[str]:
        """The distinct labels, sorted."""
        return sorted({tag for tags in self.labels for tag in tags})

    def label_counts(self) -> dict[str, int]:
        """How many words carry each label, in `label_set` order."""
        counts = Counter(self.flat_labels())
        return {label: counts[label] for label in sorted(counts)}

    def flat_words(self) -> list[str]:
        """All words of all sentences, in order."""
        return [word for words in self.sentences for word in words]

    def flat_labels(self) -> list[str]:
        """All labels of all sentences, in order (aligned with `flat_words`)."""
        return [tag for tags in self.labels for tag in tags]

    def offsets(self) -> np.ndarray:
        """int64 array of `n_sentences + 1` offsets: sentence i's words are flat rows `offsets[i]:offsets[i+1]`."""
        return np.concatenate([[0], np.cumsum([len(w) for w in self.sentences], dtype=np.int64)]).astype(np.int64)

    def word_indices(self, sentence_indices: Iterable[int]) -> np.ndarray:
        """Flat word rows of the given sentences (in the order given), e.g. to split activations by sentence."""
        offsets = self.offsets()
        chosen = self._check_indices(sentence_indices)
        parts = [np.arange(offsets[i], offsets[i + 1], dtype=np.int64) for i in chosen]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def label_ids(
        self, label_to_id: Mapping[str, int] | Sequence[str] | None = None, *, unknown: int | None = None
    ) -> tuple[np.ndarray, list[str]]:
        """Flat labels as int64 ids, and the labels in id order.

        Without `label_to_id` the ids index `label_set`. Pass the list a training corpus returned (or a
        dict) to encode a test corpus the same way; a label missing from it raises InputError unless
        `unknown` gives the id to use for it.
        """
        if label_to_id is None:
            names = self.label_set
            mapping = {label: i for i, label in enumerate(names)}
        elif isinstance(label_to_id, Mapping):
            mapping = dict(label_to_id)
            names = [label for label, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
        else:
            names = list(label_to_id)
            mapping = {label: i for i, label in enumerate(names)}
        flat = self.flat_labels()
        if unknown is None:
            missing = sorted(set(flat) - set(mapping))
            if missing:
                raise InputError(
                    f"{self.source or 'corpus'}: label(s) {', '.join(map(repr, missing[:5]))} not in the given "
                    f"label mapping ({len(mapping)} labels); pass unknown=ID to map them to one id"
                )
            ids = [mapping[label] for label in flat]
        else:
            ids = [mapping.get(label, unknown) for label in flat]
        return np.asarray(ids, dtype=np.int64), names

    def subset(self, indices: Iterable[int]) -> LabeledCorpus:
        """A corpus of the given sentences, in the order given."""
        chosen = self._check_indices(indices)
        return LabeledCorpus(
            sentences=[list(self.sentences[i]) for i in chosen],
            labels=[list(self.labels[i]) for i in chosen],
            source=self.source,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: source, counts, label counts, sentences and labels."""
        return {
            "source": self.source,
            "n_sentences": self.n_sentences,
            "n_words": self.n_words,
            "label_counts": self.label_counts(),
            "sentences": [list(words) for words in self.sentences],
            "labels": [list(tags) for tags in self.labels],
        }

    def _check_indices(self, indices: Iterable[int]) -> list[int]:
        """Sentence indices as Python ints, refusing booleans and out-of-range values."""
        arr = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
        if arr.size and (arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer)):
            raise InputError(f"indices: expected integer sentence indices, got dtype {arr.dtype}")
        chosen = [int(i) for i in arr.ravel()]
        bad = [i for i in chosen if not 0 <= i < len(self.sentences)]
        if bad:
            raise InputError(f"indices: {bad[0]} is out of range for {len(self.sentences)} sentences")
        return chosen


# ---------------------------------------------------------------- readers


def read_conllu(path: str | os.PathLike[str], column: str | int = "upos") -> LabeledCorpus:
    """CoNLL-U words with the labels of `column` ("upos", "xpos", "deprel", another name, or index 0-9)."""
    sentences, labels = parse_conllu(path, column)
    return LabeledCorpus(sentences, labels, source=str(path))


def read_parallel(text_path: str | os.PathLike[str], label_path: str | os.PathLike[str]) -> LabeledCorpus:
    """NeuroX's parallel files: a sentence per line of `text_path`, its labels on the same line of `label_path`."""
    sentences, labels = parse_parallel(text_path, label_path)
    return LabeledCorpus(sentences, labels, source=str(text_path))


def read_jsonl_labels(path: str | os.PathLike[str]) -> LabeledCorpus:
    """JSONL with one `{"tokens": [...], "labels": [...]}` object per line."""
    sentences, labels = parse_jsonl_labels(path)
    return LabeledCorpus(sentences, labels, source=str(path))


def from_synthetic(samples: Iterable[Sample], label: str = "pos") -> LabeledCorpus:
    """Word labels of synthetic-corpus samples, known by construction.

    - "pos": the sample's UPOS tags (samples without tags are skipped);
    - "topic": the sample's topic on every word (samples without a topic are skipped);
    - "toxic": "toxic" for a word in `TOXIC_WORDS`, else "clean";
    - "task": the succession task for a word that is a task item (`item_positions[i] >= 0`), else "O".
    """
    sentences, labels = parse_synthetic(samples, label)
    return LabeledCorpus(sentences, labels, source=f"synthetic:{label}")


def read_labels(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",
    column: str | int = "upos",
    label_path: str | os.PathLike[str] | None = None,
    synthetic_label: str = "pos",
) -> LabeledCorpus:
    """Read a token-label file in any supported format (the CLI's `--labels FILE`).

    `format="auto"` picks by extension: `.conllu` is CoNLL-U (`column` chooses the labels); `.jsonl` is
    token-label JSONL, or a synthetic corpus written by `write_jsonl` (labelled by `synthetic_label`);
    anything else is the text file of a NeuroX parallel pair, which needs `label_path`.
    """
    (sentences, labels), source = parse_labels(
        path, format=format, column=column, label_path=label_path, synthetic_label=synthetic_label
    )
    return LabeledCorpus(sentences, labels, source=source)


SYNTHETIC_KINDS = ("pos", "topic", "toxic", "task")
"""The labels of a synthetic-corpus JSONL (`from_synthetic`); any other `column` is a CoNLL-U column."""


def read_label_file(
    path: str | os.PathLike[str], column: str | int = "upos", *, corpus_path: str | os.PathLike[str] | None = None
) -> LabeledCorpus:
    """The labels for a store's words from one file (the CLI's `--labels FILE --column C`).

    `.conllu` and `.jsonl` files carry their own words: `column` is a CoNLL-U column, or for a synthetic
    corpus one of SYNTHETIC_KINDS. Any other file is a NeuroX label file parallel to `corpus_path`, the text
    the store was extracted from (its manifest records it)."""
    source = Path(path)
    if source.suffix in (".conllu", ".jsonl"):
        synthetic = column in SYNTHETIC_KINDS
        return read_labels(source, column="upos" if synthetic else column,
                           synthetic_label=str(column) if synthetic else "pos")
    if not corpus_path:
        raise InputError(f"labels: {path}: a parallel label file needs the store's corpus file, which this store "
                         "does not record", arg="labels")
    return read_labels(corpus_path, label_path=source)


# ---------------------------------------------------------------- transformations


def _check_int(name: str, value: object, minimum: int) -> int:
    """`value` as an int >= minimum, or InputError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InputError(f"{name}: got {value!r}, expected an integer >= {minimum}")
    return int(value)


def balanced_indices(
    labels: Sequence[str] | np.ndarray, *, seed: int = 0, max_per_class: int | None = None
) -> np.ndarray:
    """Sorted indices of a random undersample of `labels` (flat, one per word).

    Without `max_per_class` every class is cut to the size of the smallest class, so all classes end
    with equal counts. With `max_per_class=k` every class is cut to at most k (classes smaller than k
    keep all their words): a cap for skewed data where the smallest class is tiny.
    """
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise InputError(f"labels: expected a flat sequence, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    cap = None if max_per_class is None else _check_int("max_per_class", max_per_class, 1)
    classes, inverse, counts = np.unique(arr, return_inverse=True, return_counts=True)
    target = int(counts.min()) if cap is None else cap
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        if len(members) > target:
            members = rng.choice(members, size=target, replace=False)
        keep.append(members)
    return np.sort(np.concatenate(keep)).astype(np.int64)


def select_words(
    corpus: LabeledCorpus,
    *,
    min_count: int = 1,
    balance: bool = False,
    max_per_class: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Boolean mask over the corpus's flat words: which words to train and evaluate on.

    Words whose label occurs fewer than `min_count` times are left out (their class is too rare to
    learn). Then, with `balance` or `max_per_class`, the remaining classes are undersampled as in
    `balanced_indices`. Words are masked, never deleted, so the mask indexes activation rows directly.
    """
    min_count = _check_int("min_count", min_count, 1)
    flat = np.asarray(corpus.flat_labels())
    mask = np.zeros(flat.shape[0], dtype=bool)
    if flat.size == 0:
        return mask
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    mask = (counts >= min_count)[inverse]
    if balance or max_per_class is not None:
        kept = np.flatnonzero(mask)
        chosen = kept[balanced_indices(flat[kept], seed=seed, max_per_class=max_per_class)]
        mask = np.zeros_like(mask)
        mask[chosen] = True
    return mask


def min_class_frequency(corpus: LabeledCorpus, n: int, *, other: str = "OTHER") -> LabeledCorpus:
    """A corpus in which every label occurring fewer than `n` times is replaced by `other`.

    To leave rare-class words out instead of relabelling them, use `select_words(corpus, min_count=n)`.
    """
    n = _check_int("n", n, 1)
    counts = Counter(corpus.flat_labels())
    rare = {label for label, c in counts.items() if c < n}
    labels = [[other if tag in rare else tag for tag in tags] for tags in corpus.labels]
    return LabeledCorpus([list(w) for w in corpus.sentences], labels, source=corpus.source)


def control_task(corpus: LabeledCorpus, *, seed: int = 0) -> LabeledCorpus:
    """Hewitt & Liang's control task: each word type gets one fixed label drawn at random.

    Labels are drawn from the empirical label distribution of the real task, so the control task has
    the same label set and similar class sizes, but its labels can only be memorised per word, not
    read off the context. Word types are case-sensitive strings. Build it on the whole corpus before
    splitting, so a word seen at test time has the same control label as in training. Selectivity is
    task accuracy minus control-task accuracy.
    """
    counts = corpus.label_counts()
    names = list(counts)
    if not names:
        return LabeledCorpus([], [], source=f"control({corpus.source}, seed={seed})")
    p = np.asarray([counts[label] for label in names], dtype=np.float64)
    types = sorted({word for words in corpus.sentences for word in words})
    drawn = np.random.default_rng(seed).choice(len(names), size=len(types), p=p / p.sum())
    control = {word: names[int(k)] for word, k in zip(types, drawn, strict=True)}
    labels = [[control[word] for word in words] for words in corpus.sentences]
    return LabeledCorpus([list(w) for w in corpus.sentences], labels, source=f"control({corpus.source}, seed={seed})")


def train_test_split_sentences(
    corpus: LabeledCorpus, test_size: float | int = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted sentence indices (train, test), split by sentence so no sentence's words land on both sides.

    `test_size` is a fraction in (0, 1) (rounded up to whole sentences) or a number of sentences; both
    parts get at least one sentence. Use `corpus.subset(idx)` for corpora and `corpus.word_indices(idx)`
    for the matching flat activation rows.
    """
    n = len(corpus)
    if n < 2:
        raise InputError(f"{corpus.source or 'corpus'}: {n} sentence(s); a train/test split needs at least 2")
    if isinstance(test_size, bool) or not isinstance(test_size, int | float | np.integer | np.floating):
        raise InputError(f"test_size: got {test_size!r}, expected a fraction in (0, 1) or a sentence count")
    if isinstance(test_size, int | np.integer):
        n_test = int(test_size)
        if not 1 <= n_test < n:
            raise InputError(f"test_size: got {n_test} sentences, expected 1 to {n - 1} for {n} sentences")
    else:
        if not 0.0 < float(test_size) < 1.0:
            raise InputError(f"test_size: got {test_size!r}, expected a fraction strictly between 0 and 1")
        n_test = min(max(1, math.ceil(float(test_size) * n)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]).astype(np.int64), np.sort(order[:n_test]).astype(np.int64)
