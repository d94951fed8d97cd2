"""Neuron analysis on a store: rank neurons for a concept, evaluate a ranking, find top examples.

Rankings are reported in units (`blocks.1.mlp.hook_post:7`) so every other analysis can act on them;
`result.json` lists entries `{"point", "neuron", "score"}` best first, overall and per class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from lmscope.activations import ActivationStore
from lmscope.errors import InputError, bad_argument
from lmscope.model.units import Unit
from lmscope.neurons.dataset import NeuronDataset
from lmscope.neurons.evaluation import accuracy_at_k, selectivity
from lmscope.neurons.gaussian import GaussianProbe
from lmscope.neurons.probe import LinearProbe
from lmscope.neurons.rankers import IoU, Probeless, RandomRanking, Ranker
from lmscope.results import ResultMixin

METHODS: dict[str, type[Ranker]] = {"lca": LinearProbe, "probeless": Probeless, "iou": IoU,
                                    "gaussian": GaussianProbe, "random": RandomRanking}


def make_ranker(method: str, **params: Any) -> Ranker:
    if method not in METHODS:
        raise bad_argument("method", f"one of {', '.join(METHODS)}", method)
    try:
        return METHODS[method](**params)
    except TypeError as err:
        raise InputError(f"method: {method}: bad parameter ({err})", arg="method") from None


def _entries(units: Sequence[str], order: np.ndarray, scores: np.ndarray, top: int | None) -> list[dict[str, Any]]:
    picked = order if top is None else order[:top]
    out = []
    for i in picked:
        unit = Unit.parse(units[int(i)])
        out.append({"point": unit.hook, "neuron": unit.index, "score": float(scores[int(i)])})
    return out


@dataclass
class NeuronRanking(ResultMixin):
    """A ranking of every neuron, overall and per class, with the probe accuracy where there is a probe."""

    kind: ClassVar[str] = "neuron_ranking"
    what: ClassVar[str] = "neuron ranking (written by `lmscope neurons rank`)"

    method: str
    params: dict[str, Any]
    overall: list[dict[str, Any]]
    per_class: dict[str, list[dict[str, Any]]]
    n_rows: int
    label_names: list[str]
    accuracy: dict[str, float] = field(default_factory=dict)

    def units(self, k: int | None = None, label: str | None = None) -> list[str]:
        """Unit strings of the top k neurons (overall, or for one class)."""
        entries = self.overall if label is None else self.per_class[label]
        return [f"{e['point']}:{e['neuron']}" for e in entries[:k]]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "method": self.method, "params": self.params, "n_rows": self.n_rows,
                "labels": self.label_names, "accuracy": self.accuracy, "ranking": self.overall,
                "per_class": self.per_class}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NeuronRanking:
        """Rebuild from `to_dict()`; `load(path)` reads a ranking's result.json (or its directory) through it."""
        return cls(str(d["method"]), dict(d["params"]), _checked_entries(d["ranking"]),
                   {str(k): _checked_entries(v) for k, v in dict(d["per_class"]).items()},
                   int(d["n_rows"]), [str(x) for x in d["labels"]], dict(d.get("accuracy") or {}))


def _checked_entries(entries: Any) -> list[dict[str, Any]]:
    """A file's ranking entries, each `{"point": str, "neuron": int >= 0, "score": number}`; anything else is a
    TypeError that `NeuronRanking.load` turns into one line naming the file."""
    if not isinstance(entries, list):
        raise TypeError(f"a ranking is a list of entries, got {type(entries).__name__}")
    for e in entries:
        if not (isinstance(e, dict) and isinstance(e.get("point"), str) and type(e.get("neuron")) is int
                and e["neuron"] >= 0 and isinstance(e.get("score"), int | float) and not isinstance(e["score"], bool)):
            raise TypeError(f"a ranking entry is {{'point': str, 'neuron': int >= 0, 'score': number}}, got {e!r:.80}")
    return entries


def rank_neurons(data: NeuronDataset, method: str = "lca", *, top: int | None = None, seed: int = 0,
                 **params: Any) -> NeuronRanking:
    """Fit `method` on a train split of `data` and rank every neuron (test accuracy reported for `lca`)."""
    ranker = make_ranker(method, **params)
    train, test = data.split(seed=seed)
    X_train = data.part(train)  # a view where the dataset was loaded in this split's order
    ranker.fit(X_train, data.y[train])
    accuracy: dict[str, float] = {}
    if isinstance(ranker, LinearProbe):
        accuracy = {"train": float(ranker.score(X_train, data.y[train])),
                    "test": float(ranker.score(data.part(test), data.y[test]))}
    per_class = {data.label_names[int(c)]: _entries(data.units, ranker.class_rankings_[i], ranker.class_scores_[i],
                                                    top)
                 for i, c in enumerate(ranker.classes_)}
    return NeuronRanking(method, {**ranker.get_params(), "seed": seed}, _entries(data.units, ranker.ranking_,
                                                                                 ranker.scores_, top),
                         per_class, len(data.y), data.label_names, accuracy)


def ranking_indices(ranking: NeuronRanking, units: Sequence[str]) -> np.ndarray:
    """The ranking as column indices of a dataset with these `units` (a full permutation is required)."""
    position = {u: i for i, u in enumerate(units)}
    order = [position.get(u, -1) for u in ranking.units()]
    if len(order) != len(units) or -1 in order:
        raise InputError("ranking: it does not rank every neuron of this store (rank again with top unset)")
    return np.asarray(order)


def evaluate_ranking(data: NeuronDataset, ranking: NeuronRanking, ks: Sequence[int], *, seed: int = 0,
                     progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Accuracy with the top / random / bottom k neurons, and selectivity (task − control) on the top k.

    `progress(stage, i, n)` is told when each stage starts and ends (the probes are the slow part). The
    train and test parts are views of `data.X` where it was loaded in this split's order
    (`load_dataset(..., split=(0.2, seed))`). The selectivity of all neurons still reads them in ranking order (a
    transient permuted copy of the activations): in stored order the probe's sums round differently, and on
    SmolLM2-135M two of 1,192 control-task predictions flipped.
    """
    report = progress or (lambda stage, i, n: None)
    order = ranking_indices(ranking, data.units)
    train, test = data.split(seed=seed)
    X_train, X_test = data.part(train), data.part(test)
    report("accuracy at k", 0, 1)
    acc = accuracy_at_k(X_train, data.y[train], X_test, data.y[test], order, list(ks), seed=seed)
    report("accuracy at k", 1, 1)
    result: dict[str, Any] = {**acc.to_dict(), "kind": "neuron_evaluation", "method": ranking.method}
    if data.control is not None:
        sel = {}
        sizes = [*ks, len(order)]
        for i, k in enumerate(sizes):
            report("selectivity", i, len(sizes))
            s = selectivity(X_train, data.y[train], X_test, data.y[test], data.control[train],
                            data.control[test], neurons=order[:k])
            sel[str(k)] = s.to_dict()
        report("selectivity", len(sizes), len(sizes))
        result["selectivity"] = sel
    return result


@dataclass(frozen=True)
class TopExample:
    """A context where a neuron fires: the sentence, the word's position and the activation there."""

    activation: float
    sentence_index: int
    word_index: int
    words: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"activation": self.activation, "sentence_index": self.sentence_index,
                "word_index": self.word_index, "word": self.words[self.word_index], "sentence": " ".join(self.words)}


def top_examples(store: ActivationStore, unit: str, k: int = 10) -> list[TopExample]:
    """The k words (with their sentences) where a neuron fires most, reading one column shard by shard."""
    u = Unit.parse(unit)
    if u.kind != "neuron" or u.hook not in store.dims:
        raise InputError(f"unit: {unit!r}: expected <point>:<index> with a point of this store "
                         f"({', '.join(store.points)})", arg="unit")
    if not 0 <= u.index < store.dims[u.hook]:  # type: ignore[operator]
        raise InputError(f"unit: {unit!r}: index out of range (the point has {store.dims[u.hook]} neurons)",
                         arg="unit")
    if k < 1:
        raise bad_argument("k", "a positive integer", k)
    best: list[tuple[float, int, int, list[str], int]] = []
    for shard in store.iter_shards([u.hook], neurons=[u.index]):  # type: ignore[list-item]
        col = shard.activations[u.hook][:, 0].float()
        top = col.topk(min(k, len(col)))
        for value, row in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            s, w = int(shard.sentence_index[row]), int(shard.word_index[row])
            best.append((value, s, w, shard.sentences[s - shard.first_sentence], row))
        best = sorted(best, key=lambda t: (-t[0], t[1], t[2]))[:k]
    return [TopExample(v, s, w, words) for v, s, w, words, _ in best]
