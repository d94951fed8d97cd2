"""Neuron datasets in one copy of memory: rows read shard by shard into one array, ordered by the split so its
parts are views. Nothing computed from them may change: rankings, evaluations and the ablation probe equal
those of the corpus-order dataset (the old path: the whole store loaded, then indexed)."""

from __future__ import annotations

import numpy as np
import pytest

from lmscope.activations import ExtractConfig, extract
from lmscope.data.labels import from_synthetic
from lmscope.data.synthetic import generate_corpus
from lmscope.errors import InputError
from lmscope.neurons.analysis import evaluate_ranking, rank_neurons, ranking_indices
from lmscope.neurons.dataset import load_dataset, read_rows
from lmscope.neurons.evaluation import selectivity
from lmscope.neurons.probe import LinearProbe
from tiny_models import tiny_hooked_with_tokenizer

POINTS = ("blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post")


@pytest.fixture(scope="module")
def store_and_corpus(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    model = tiny_hooked_with_tokenizer(n_samples=600)
    corpus = from_synthetic(generate_corpus(120, seed=5, mix={"grammar": 1.0}), label="pos")
    config = ExtractConfig(POINTS, shard_sentences=25)  # several shards
    store = extract(model, corpus.sentences, tmp_path_factory.mktemp("mem") / "s", config)
    assert len(store.manifest["shards"]) == 5
    return store, corpus


def test_read_rows_equals_indexing_the_whole_store(store_and_corpus) -> None:  # type: ignore[no-untyped-def]
    store, _ = store_and_corpus
    whole = store.to_numpy()
    rows = np.random.default_rng(0).permutation(store.n_rows)[: store.n_rows // 2]
    assert np.array_equal(read_rows(store, rows), whole[rows])
    assert np.array_equal(read_rows(store, rows, [POINTS[1]]), store.to_numpy([POINTS[1]])[rows])
    assert read_rows(store, np.array([], dtype=np.int64)).shape == (0, whole.shape[1])
    with pytest.raises(InputError, match=r"'blocks\.5\.mlp\.hook_post' is not in this store"):
        read_rows(store, rows, ["blocks.5.mlp.hook_post"])


def test_split_order_is_the_corpus_order_permuted(store_and_corpus) -> None:  # type: ignore[no-untyped-def]
    store, corpus = store_and_corpus
    plain = load_dataset(store, corpus, min_count=3, seed=4)
    ordered = load_dataset(store, corpus, min_count=3, seed=4, split=(0.2, 4))
    train, test = plain.split(seed=4)
    perm = np.concatenate([train, test])
    assert np.array_equal(ordered.X, plain.X[perm]) and np.array_equal(ordered.y, plain.y[perm])
    assert np.array_equal(ordered.sentence_index, plain.sentence_index[perm])
    assert ordered.words == [plain.words[i] for i in perm]
    assert np.array_equal(ordered.control, plain.control[perm])  # type: ignore[index]
    o_train, o_test = ordered.split(seed=4)
    assert np.array_equal(o_train, np.arange(len(train))) and np.array_equal(o_test, len(train) + np.arange(len(test)))
    assert np.shares_memory(ordered.part(o_train), ordered.X) and np.shares_memory(ordered.part(o_test), ordered.X)
    assert not np.shares_memory(plain.part(train), plain.X)  # corpus order: the parts interleave, so copies
    assert np.array_equal(ordered.part(o_train), plain.X[train])


def test_rankings_evaluations_and_probes_are_unchanged(store_and_corpus) -> None:  # type: ignore[no-untyped-def]
    store, corpus = store_and_corpus
    plain = load_dataset(store, corpus, seed=1)
    ordered = load_dataset(store, corpus, seed=1, split=(0.2, 1))
    for method in ("probeless", "lca"):
        a, b = rank_neurons(plain, method, seed=1), rank_neurons(ordered, method, seed=1)
        assert a.overall == b.overall and a.accuracy == b.accuracy
    ranking = rank_neurons(plain, "probeless", seed=1)
    old, new = evaluate_ranking(plain, ranking, [5, 20], seed=1), evaluate_ranking(ordered, ranking, [5, 20], seed=1)
    assert old == new
    order = ranking_indices(ranking, plain.units)  # the old selectivity of all neurons: columns in ranking order
    tr, te = plain.split(seed=1)
    permuted = selectivity(plain.X[tr], plain.y[tr], plain.X[te], plain.y[te], plain.control[tr],  # type: ignore
                           plain.control[te], neurons=order).to_dict()  # type: ignore[index]
    assert new["selectivity"][str(len(order))] == permuted
    assert new["all_neurons"] > new["majority"] + 0.2  # the probe learns something
    train_p, _ = plain.split(seed=1)
    train_o, _ = ordered.split(seed=1)
    probe = LinearProbe(l1=1e-5, l2=1e-4, max_iter=50)
    assert np.array_equal(probe.clone().fit(plain.X[train_p], plain.y[train_p]).coef_,
                          probe.clone().fit(ordered.part(train_o), ordered.y[train_o]).coef_)
