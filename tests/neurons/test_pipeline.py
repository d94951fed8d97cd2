"""Neuron analysis end to end: a planted neuron in a hand-built model, and POS neurons of the zoo model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmscope import HookedModel
from lmscope.activations import ExtractConfig, extract
from lmscope.data.labels import from_synthetic
from lmscope.data.synthetic import generate_corpus
from lmscope.neurons.ablation import ablate_neurons
from lmscope.neurons.analysis import METHODS, NeuronRanking, evaluate_ranking, rank_neurons, top_examples
from lmscope.neurons.dataset import load_dataset

PLANTED = "blocks.1.mlp.hook_post:7"


def _planted_model() -> tuple[HookedModel, list[str]]:
    """A GPT-2 whose residual stream is the embedding alone, with neuron 7 of layer 1 firing only on nouns.

    Noun tokens carry 1.0 in residual dimension 0 (others 0); attention and layer 0's MLP write nothing;
    the neuron reads dimension 0 after LayerNorm. Every other neuron is random noise.
    """
    from tiny_models import tiny_hooked_with_tokenizer

    model = tiny_hooked_with_tokenizer(n_samples=1500)
    tags: dict[str, set[str]] = {}
    for s in generate_corpus(1500, seed=0):
        for w, t in zip(s.words, s.pos or (), strict=False):
            tags.setdefault(w, set()).add(t)
    nouns = sorted(w for w, t in tags.items() if t == {"NOUN"})  # words that are only ever nouns
    ids = {i for w in nouns for i in model.tokenizer(" " + w, add_special_tokens=False)["input_ids"][-1:]}
    hf = model.hf.transformer
    with torch.no_grad():
        hf.wte.weight[:, 0] = 0.0
        hf.wte.weight[sorted(ids), 0] = 1.0
        hf.wpe.weight[:, 0] = 0.0
        for block in hf.h:
            block.attn.c_proj.weight.zero_()
            block.attn.c_proj.bias.zero_()
        hf.h[0].mlp.c_proj.weight.zero_()
        hf.h[0].mlp.c_proj.bias.zero_()
        hf.h[1].ln_2.weight.fill_(1.0)
        hf.h[1].ln_2.bias.zero_()
        hf.h[1].mlp.c_fc.weight[:, 7] = 0.0
        hf.h[1].mlp.c_fc.weight[0, 7] = 3.0
        hf.h[1].mlp.c_fc.bias[7] = -2.0
    return model, nouns


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    model, _ = _planted_model()
    samples = generate_corpus(400, seed=5, mix={"grammar": 1.0})
    corpus = from_synthetic(samples, label="pos")
    points = ("blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post")
    store = extract(model, corpus.sentences, tmp_path_factory.mktemp("planted") / "s", ExtractConfig(points))
    return store, corpus


@pytest.mark.parametrize("method", sorted(METHODS))
def test_planted_noun_neuron_ranked_first(planted, method: str) -> None:  # type: ignore[no-untyped-def]
    store, corpus = planted
    data = load_dataset(store, corpus, control=False)
    params = {"max_neurons": 8} if method == "gaussian" else {}
    ranking = rank_neurons(data, method, **params)
    first_for_noun = ranking.units(1, "NOUN")[0]
    if method == "random":
        assert len(ranking.overall) == len(data.units)  # a full permutation, no preference asked of it
    else:
        assert first_for_noun == PLANTED


def test_top_examples_of_planted_neuron_are_nouns(planted) -> None:  # type: ignore[no-untyped-def]
    store, corpus = planted
    noun_words = {w for ws, ls in zip(corpus.sentences, corpus.labels, strict=True)
                  for w, label in zip(ws, ls, strict=True) if label == "NOUN"}
    examples = top_examples(store, PLANTED, k=20)
    assert len(examples) == 20 and all(e.words[e.word_index] in noun_words for e in examples)
    assert [e.activation for e in examples] == sorted((e.activation for e in examples), reverse=True)


@pytest.fixture(scope="module")
def zoo_pos(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    corpus = from_synthetic(generate_corpus(500, seed=21, mix={"grammar": 0.8, "topic": 0.2}), label="pos")
    points = ("blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post")
    store = extract(model, corpus.sentences, tmp_path_factory.mktemp("zoo") / "s", ExtractConfig(points))
    data = load_dataset(store, corpus, min_count=10)
    return model, store, corpus, data, rank_neurons(data, "lca")


def test_zoo_pos_probe_far_above_majority(zoo_pos) -> None:  # type: ignore[no-untyped-def]
    _, _, _, data, ranking = zoo_pos
    result = evaluate_ranking(data, ranking, [10, 40])
    assert result["all_neurons"] > result["majority"] + 0.5
    assert ranking.accuracy["test"] > 0.9
    assert result["top"][0] > result["random"][0] > result["bottom"][0] - 0.05
    assert result["selectivity"]["10"]["selectivity"] > 0.1


def test_zoo_ablating_top_pos_neurons_hurts_more_than_random(zoo_pos, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, store, corpus, _, ranking = zoo_pos
    result = ablate_neurons(model, store, corpus, ranking, 80, random_draws=2)
    top_drop = result.clean_accuracy - result.top_accuracy
    random_drop = result.clean_accuracy - result.random_accuracy
    assert top_drop > 0.005 and top_drop > 2 * random_drop, result
    ranking.save(tmp_path)
    assert NeuronRanking.load(tmp_path).units(3) == ranking.units(3)
    mean = ablate_neurons(model, store, corpus, ranking, 40, mode="mean", random_draws=1)
    assert mean.top_accuracy < mean.clean_accuracy

