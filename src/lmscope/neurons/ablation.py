"""Ablation inside the model: silence the top-k neurons of a ranking and measure what is lost.

A probe is trained on clean activations; the selected neurons are then zero- or mean-ablated through the
spine's interventions while the test sentences are re-extracted with the same code that built the store,
and the probe's accuracy and the LM loss are compared with ablating the same number of random neurons.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch

from lmscope.activations import ActivationStore
from lmscope.activations.collect import word_activations
from lmscope.data.labels import LabeledCorpus
from lmscope.errors import bad_argument
from lmscope.model.hooked import HookedModel
from lmscope.model.interventions import Intervention, MeanAblation, ZeroAblation
from lmscope.model.stats import lm_loss
from lmscope.neurons.analysis import NeuronRanking
from lmscope.neurons.dataset import load_dataset
from lmscope.neurons.probe import LinearProbe
from lmscope.results import ResultMixin, number


@dataclass
class AblationResult(ResultMixin):
    """Probe accuracy and LM loss on held-out sentences: clean, top-k ablated, random-k ablated (mean of draws)."""

    kind: ClassVar[str] = "neuron_ablation"

    k: int
    mode: str
    units: list[str]
    clean_accuracy: float
    top_accuracy: float
    random_accuracy: float
    clean_loss: float
    top_loss: float
    random_loss: float
    random_draws: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AblationResult:
        types = {"k": int, "mode": str, "units": lambda v: [str(u) for u in v], "random_draws": int}
        return cls(**{f.name: types.get(f.name, number)(d[f.name]) for f in fields(cls)})


def _intervention(units: Sequence[str], mode: str, means: dict[str, torch.Tensor]) -> Intervention:
    if mode == "zero":
        return ZeroAblation(list(units))
    if mode == "mean":
        return MeanAblation(list(units), means)
    raise bad_argument("mode", "zero or mean", mode)


def ablate_neurons(model: HookedModel, store: ActivationStore, corpus: LabeledCorpus, ranking: NeuronRanking,
                   k: int, *, mode: str = "zero", random_draws: int = 3, seed: int = 0,
                   progress: Callable[[str, int, int], None] | None = None) -> AblationResult:
    """Ablate the top-k neurons of `ranking` (and k random ones) and measure probe accuracy and LM loss.

    `progress(stage, i, n)` counts the measured runs: clean, top-k, then each random draw.
    """
    report = progress or (lambda stage, i, n: None)
    n_runs = 2 + random_draws
    data = load_dataset(store, corpus, control=False, seed=seed, split=(0.2, seed))  # train rows: a view
    if not 1 <= k <= len(data.units):
        raise bad_argument("k", f"1..{len(data.units)}", k)
    train, test = data.split(seed=seed)
    X_train = data.part(train)
    probe = LinearProbe(l1=1e-5, l2=1e-4, max_iter=200).fit(X_train, data.y[train])
    points = store.points
    test_sentences = sorted(set(data.sentence_index[test].tolist()))
    sentences = [corpus.sentences[i] for i in test_sentences]
    rows = np.isin(data.sentence_index, test_sentences)
    # rows of the re-extracted test sentences that the dataset kept (all, unless classes were filtered)
    y_test = data.y[rows]
    aggregate = store.manifest["aggregation"]
    means = {p: torch.from_numpy(m) for p, m in zip(points, np.split(X_train.mean(0), np.cumsum(
        [store.dims[p] for p in points])[:-1]), strict=True)}
    texts = [" ".join(s) for s in sentences]

    done = [0]

    def measure(units: Sequence[str]) -> tuple[float, float]:
        report("ablation runs", done[0], n_runs)
        hooks = _intervention(units, mode, means).hooks() if units else []
        acts = word_activations(model, sentences, points, aggregate=aggregate, hooks=hooks)  # type: ignore[arg-type]
        X = torch.cat([acts[p] for p in points], dim=1).numpy()
        scores = float(probe.score(X, y_test)), lm_loss(model, texts, hooks=hooks)
        done[0] += 1
        report("ablation runs", done[0], n_runs)
        return scores

    clean_acc, clean_loss = measure([])
    top_units = ranking.units(k)
    top_acc, top_loss = measure(top_units)
    rng = np.random.default_rng(seed)
    draws = [measure([data.units[i] for i in rng.choice(len(data.units), size=k, replace=False)])
             for _ in range(random_draws)]
    return AblationResult(k, mode, top_units, clean_acc, top_acc, float(np.mean([d[0] for d in draws])),
                          clean_loss, top_loss, float(np.mean([d[1] for d in draws])), random_draws)
