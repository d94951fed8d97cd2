"""Array-level evaluation of neuron rankings: accuracy with top/random/bottom k neurons, and selectivity.

Both retrain a fresh probe on the chosen neurons and measure held-out accuracy, as NeuroX does; a ranking
is good when its top k neurons keep the accuracy of all neurons and its bottom k do not. Selectivity
(Hewitt & Liang 2019) subtracts the accuracy on a control task, so a probe that merely memorises word
identity does not look like a discovery.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from lmscope.errors import InputError
from lmscope.neurons.probe import LinearProbe
from lmscope.neurons.rankers import ArrayLike, as_features, as_labels
from lmscope.results import ResultMixin, number, numbers


def _default_probe() -> LinearProbe:
    """A lightly regularised probe: the evaluation measures information in the neurons, not sparsity."""
    return LinearProbe(l1=1e-5, l2=1e-4, max_iter=200)


def _check_split(
    X_train: ArrayLike, y_train: ArrayLike, X_test: ArrayLike, y_test: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate a train/test split; return float32 numpy arrays and integer labels."""
    Xtr = as_features(X_train, "X_train").numpy()
    as_labels(y_train, Xtr.shape[0], "y_train")
    Xte = as_features(X_test, "X_test").numpy()
    as_labels(y_test, Xte.shape[0], "y_test", min_classes=1)
    if Xte.shape[1] != Xtr.shape[1]:
        raise InputError(f"X_test: has {Xte.shape[1]} neurons, X_train has {Xtr.shape[1]}")
    return Xtr, _labels(y_train), Xte, _labels(y_test)


def _labels(y: ArrayLike) -> np.ndarray:
    """Any integer array or tensor as an int64 numpy array."""
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return arr.astype(np.int64)


def _accuracy(probe: LinearProbe, Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray) -> float:
    """Held-out accuracy of a fresh copy of `probe` trained on (`Xtr`, `ytr`)."""
    return probe.clone().fit(Xtr, ytr).score(Xte, yte)


@dataclass
class AccuracyAtK(ResultMixin):
    """Held-out probe accuracy on the top, random and bottom k neurons of a ranking, for each k."""

    kind: ClassVar[str] = "accuracy_at_k"

    ks: list[int]
    top: list[float]
    random: list[float]
    bottom: list[float]
    all_neurons: float
    majority: float
    n_neurons: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (lists, floats, ints)."""
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AccuracyAtK:
        return cls([int(k) for k in d["ks"]], numbers(list(d["top"])), numbers(list(d["random"])),
                   numbers(list(d["bottom"])), number(d["all_neurons"]), number(d["majority"]), int(d["n_neurons"]))


@dataclass
class Selectivity(ResultMixin):
    """Task accuracy minus control-task accuracy of the same probe on the same neurons."""

    kind: ClassVar[str] = "selectivity"

    task_accuracy: float
    control_accuracy: float
    selectivity: float
    n_neurons: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (floats, ints)."""
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Selectivity:
        return cls(number(d["task_accuracy"]), number(d["control_accuracy"]), number(d["selectivity"]),
                   int(d["n_neurons"]))


def accuracy_at_k(
    X_train: ArrayLike,
    y_train: ArrayLike,
    X_test: ArrayLike,
    y_test: ArrayLike,
    ranking: ArrayLike,
    ks: list[int] | tuple[int, ...],
    *,
    probe: LinearProbe | None = None,
    seed: int = 0,
) -> AccuracyAtK:
    """Accuracy of a fresh probe on the top-k, random-k and bottom-k neurons of `ranking`, for each k.

    `X_*: Float[n, n_neurons]`, `y_*: Int[n]`; `ranking: Int[n_neurons]` is a full ranking (a permutation of
    the neurons, best first, e.g. a ranker's `ranking_`); bottom k = its last k. Random subsets are drawn
    from `seed`, a new one per k. Also reports the accuracy with all neurons and the majority-class baseline
    (the most frequent training class, scored on the test labels). `probe` defaults to a LinearProbe with
    small l1/l2.
    """
    Xtr, ytr, Xte, yte = _check_split(X_train, y_train, X_test, y_test)
    d = Xtr.shape[1]
    order = _labels(ranking)
    if order.ndim != 1 or order.shape[0] != d or not np.array_equal(np.sort(order), np.arange(d)):
        raise InputError(f"ranking: expected a permutation of the {d} neuron indices, found shape {order.shape}")
    k_list = [int(k) for k in ks]
    if not k_list or any(k < 1 or k > d for k in k_list):
        raise InputError(f"ks: expected a non-empty list of integers in [1, {d}], found {list(ks)!r}")
    base = probe if probe is not None else _default_probe()
    rng = np.random.default_rng(seed)
    top, rand, bottom = [], [], []
    for k in k_list:
        for cols, out in ((order[:k], top), (np.sort(rng.permutation(d)[:k]), rand), (order[d - k :], bottom)):
            out.append(_accuracy(base, Xtr[:, cols], ytr, Xte[:, cols], yte))
    values, counts = np.unique(ytr, return_counts=True)
    majority = float(np.mean(yte == values[np.argmax(counts)]))
    return AccuracyAtK(
        ks=k_list,
        top=top,
        random=rand,
        bottom=bottom,
        all_neurons=_accuracy(base, Xtr, ytr, Xte, yte),
        majority=majority,
        n_neurons=d,
    )


def selectivity(
    X_train: ArrayLike,
    y_train: ArrayLike,
    X_test: ArrayLike,
    y_test: ArrayLike,
    yc_train: ArrayLike,
    yc_test: ArrayLike,
    *,
    neurons: ArrayLike | None = None,
    probe: LinearProbe | None = None,
) -> Selectivity:
    """Task accuracy minus control-task accuracy (`yc_*` are control labels), on all or the given neurons.

    The same probe settings are trained twice on the same neurons: once on the task labels, once on the
    control labels (e.g. a fixed random label per word type, as in Hewitt & Liang).
    """
    Xtr, ytr, Xte, yte = _check_split(X_train, y_train, X_test, y_test)
    as_labels(yc_train, Xtr.shape[0], "yc_train")
    as_labels(yc_test, Xte.shape[0], "yc_test", min_classes=1)
    if neurons is not None:
        cols = _labels(neurons)
        d = Xtr.shape[1]
        if cols.ndim != 1 or cols.size == 0 or cols.min() < 0 or cols.max() >= d:
            raise InputError(f"neurons: expected a non-empty list of indices in [0, {d}), found {cols.tolist()!r}")
        Xtr, Xte = Xtr[:, cols], Xte[:, cols]
    base = probe if probe is not None else _default_probe()
    task = _accuracy(base, Xtr, ytr, Xte, yte)
    control = _accuracy(base, Xtr, _labels(yc_train), Xte, _labels(yc_test))
    return Selectivity(
        task_accuracy=task, control_accuracy=control, selectivity=task - control, n_neurons=int(Xtr.shape[1])
    )
