"""LabeledCorpus and its transformations: ids, subsets, balancing, rare classes, control task, splits."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from lmscope.data.labels import (
    LabeledCorpus,
    balanced_indices,
    control_task,
    from_synthetic,
    min_class_frequency,
    select_words,
    train_test_split_sentences,
)
from lmscope.data.synthetic import generate_corpus
from lmscope.errors import InputError


@pytest.fixture
def small() -> LabeledCorpus:
    return LabeledCorpus(
        sentences=[["the", "cat", "sat"], ["a", "dog"], ["the", "dog", "ran", "fast"]],
        labels=[["DET", "NOUN", "VERB"], ["DET", "NOUN"], ["DET", "NOUN", "VERB", "ADV"]],
        source="small",
    )


@pytest.fixture(scope="module")
def pos() -> LabeledCorpus:
    return from_synthetic(generate_corpus(150, seed=0, mix={"grammar": 1.0}))


def test_corpus_basics(small: LabeledCorpus) -> None:
    assert len(small) == small.n_sentences == 3
    assert small.n_words == 9
    assert small.label_set == ["ADV", "DET", "NOUN", "VERB"]
    assert small.label_counts() == {"ADV": 1, "DET": 3, "NOUN": 3, "VERB": 2}
    assert small.flat_labels() == ["DET", "NOUN", "VERB", "DET", "NOUN", "DET", "NOUN", "VERB", "ADV"]
    assert small.flat_words()[3:5] == ["a", "dog"]
    assert small.offsets().tolist() == [0, 3, 5, 9]
    assert small.word_indices([2, 0]).tolist() == [5, 6, 7, 8, 0, 1, 2]
    d = small.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["n_words"] == 9 and d["labels"][1] == ["DET", "NOUN"] and d["source"] == "small"


def test_corpus_refuses_misaligned() -> None:
    with pytest.raises(InputError, match="sentence 1 has 2 words but 1 labels"):
        LabeledCorpus([["a"], ["b", "c"]], [["X"], ["Y"]], source="s")
    with pytest.raises(InputError, match="sentence 0 is empty"):
        LabeledCorpus([[]], [[]])


def test_label_ids(small: LabeledCorpus) -> None:
    ids, names = small.label_ids()
    assert names == ["ADV", "DET", "NOUN", "VERB"]
    assert ids.dtype == np.int64
    assert [names[i] for i in ids] == small.flat_labels()
    other = LabeledCorpus([["x", "y"]], [["VERB", "DET"]])
    assert other.label_ids(names)[0].tolist() == [3, 1]
    ids2, names2 = other.label_ids({"DET": 5, "VERB": 0})
    assert ids2.tolist() == [0, 5] and names2 == ["VERB", "DET"]
    unseen = LabeledCorpus([["x"]], [["PRON"]])
    with pytest.raises(InputError, match=r"corpus: label\(s\) 'PRON' not in the given label mapping \(4 labels\)"):
        unseen.label_ids(names)
    assert unseen.label_ids(names, unknown=-1)[0].tolist() == [-1]


def test_subset(small: LabeledCorpus) -> None:
    sub = small.subset(np.array([2, 0]))
    assert sub.sentences == [["the", "dog", "ran", "fast"], ["the", "cat", "sat"]]
    assert sub.labels[1] == ["DET", "NOUN", "VERB"]
    sub.sentences[0][0] = "changed"
    assert small.sentences[2][0] == "the"  # a copy, not a view
    with pytest.raises(InputError, match="indices: 3 is out of range for 3 sentences"):
        small.subset([3])
    with pytest.raises(InputError, match="indices: expected integer sentence indices, got dtype bool"):
        small.subset(np.array([True, False, True]))


def test_balanced_indices_equal_counts() -> None:
    labels = ["A"] * 50 + ["B"] * 7 + ["C"] * 20
    idx = balanced_indices(labels, seed=1)
    assert Counter(labels[i] for i in idx) == {"A": 7, "B": 7, "C": 7}
    assert np.all(np.diff(idx) > 0)
    assert idx.tolist() == balanced_indices(labels, seed=1).tolist()
    assert idx.tolist() != balanced_indices(labels, seed=2).tolist()
    capped = balanced_indices(labels, seed=1, max_per_class=10)
    assert Counter(labels[i] for i in capped) == {"A": 10, "B": 7, "C": 10}
    assert balanced_indices(np.array([3, 3, 1, 3]), seed=0).size == 2


def test_select_words_min_count_and_balance(small: LabeledCorpus, pos: LabeledCorpus) -> None:
    mask = select_words(small, min_count=3)
    assert mask.tolist() == [True, True, False, True, True, True, True, False, False]
    flat = np.array(pos.flat_labels())
    counts = Counter(flat.tolist())
    rare = {label for label, c in counts.items() if c < 40}
    assert rare and len(rare) < len(counts)
    mask = select_words(pos, min_count=40)
    assert mask.shape == (pos.n_words,)
    assert set(flat[mask].tolist()) == set(counts) - rare
    assert mask.sum() == sum(c for label, c in counts.items() if label not in rare)
    balanced = select_words(pos, min_count=40, balance=True, seed=0)
    kept = Counter(flat[balanced].tolist())
    smallest = min(c for label, c in counts.items() if label not in rare)
    assert set(kept) == set(counts) - rare and set(kept.values()) == {smallest}
    assert not np.any(balanced & ~mask)


def test_min_class_frequency_relabels(small: LabeledCorpus) -> None:
    out = min_class_frequency(small, 3, other="OTHER")
    assert out.sentences == small.sentences
    assert out.labels == [["DET", "NOUN", "OTHER"], ["DET", "NOUN"], ["DET", "NOUN", "OTHER", "OTHER"]]
    assert small.labels[0][2] == "VERB"
    with pytest.raises(InputError, match="n: got 0, expected an integer >= 1"):
        min_class_frequency(small, 0)


def test_control_task(pos: LabeledCorpus) -> None:
    control = control_task(pos, seed=0)
    assert control.sentences == pos.sentences
    per_type: dict[str, set[str]] = {}
    for word, label in zip(control.flat_words(), control.flat_labels(), strict=True):
        per_type.setdefault(word, set()).add(label)
    assert all(len(labels) == 1 for labels in per_type.values())
    assert set(control.label_set) <= set(pos.label_set)
    assert len(control.label_set) > 1
    assert control == control_task(pos, seed=0)
    assert control.labels != control_task(pos, seed=1).labels
    differ = sum(a != b for a, b in zip(control.flat_labels(), pos.flat_labels(), strict=True))
    assert differ > pos.n_words // 4
    # labels are drawn per word type from the real task's label distribution (averaged over seeds)
    real = Counter(pos.flat_labels())
    types = sorted(per_type)
    drawn: Counter[str] = Counter()
    for seed in range(40):
        other = control_task(pos, seed=seed)
        table = dict(zip(other.flat_words(), other.flat_labels(), strict=True))
        drawn.update(table[t] for t in types)
    for label, count in real.items():
        assert abs(drawn[label] / drawn.total() - count / real.total()) < 0.02, label

def test_train_test_split_sentences(pos: LabeledCorpus) -> None:
    train, test = train_test_split_sentences(pos, test_size=0.2, seed=0)
    assert len(test) == 30 and len(train) == 120
    assert not set(train.tolist()) & set(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(150))
    again = train_test_split_sentences(pos, test_size=0.2, seed=0)
    assert train.tolist() == again[0].tolist() and test.tolist() == again[1].tolist()
    assert test.tolist() != train_test_split_sentences(pos, test_size=0.2, seed=1)[1].tolist()
    rows_train, rows_test = pos.word_indices(train), pos.word_indices(test)
    assert not set(rows_train.tolist()) & set(rows_test.tolist())
    assert len(rows_train) + len(rows_test) == pos.n_words
    assert pos.subset(test).n_words == len(rows_test)
    assert len(train_test_split_sentences(pos, test_size=7)[1]) == 7


@pytest.mark.parametrize(("test_size", "words"), [
    (0.0, r"got 0\.0, expected a fraction strictly between 0 and 1"),
    (1.0, r"got 1\.0, expected a fraction strictly between 0 and 1"),
    (150, "got 150 sentences, expected 1 to 149 for 150 sentences"),
    (0, "got 0 sentences, expected 1 to 149 for 150 sentences"),
    ("0.2", r"got '0\.2', expected a fraction in \(0, 1\) or a sentence count"),
])
def test_split_bad_test_size(pos: LabeledCorpus, test_size: object, words: str) -> None:
    with pytest.raises(InputError, match=f"^test_size: {words}$"):
        train_test_split_sentences(pos, test_size=test_size)  # type: ignore[arg-type]
