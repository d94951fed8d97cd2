"""Neuron rankers with scikit-learn conventions, and the probe-free ones.

Every ranker takes activations `X: Float[n_samples, n_neurons]` and class ids `y: Int[n_samples]` and sets
`classes_`, `scores_` (global importance, higher is more important), `ranking_` (neuron indices best first,
ties broken by the lower index), `class_scores_ [n_classes, n_neurons]` and `class_rankings_`. Rows of the
per-class arrays follow `classes_`.

Here: the `Ranker` base, input checks shared by all rankers, `Probeless` (Antverg & Belinkov 2022), `IoU`
(Mu & Andreas 2020) and `RandomRanking`. `LinearProbe` lives in `probe.py`, `GaussianProbe` in `gaussian.py`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Self

import numpy as np
import torch

from lmscope.errors import InputError
from lmscope.estimator import Estimator

ArrayLike = np.ndarray | torch.Tensor


def as_features(X: ArrayLike, name: str = "X", *, device: str | torch.device = "cpu") -> torch.Tensor:
    """Return `X` as a finite float32 tensor `Float[n_samples, n_neurons]`, or raise InputError naming `name`.

    A float32 numpy array on the CPU is wrapped without a copy.
    """
    if isinstance(X, np.ndarray):
        if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
            raise InputError(f"{name}: expected a numeric array, found dtype {X.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(X))
    elif isinstance(X, torch.Tensor):
        t = X.detach()
    else:
        raise InputError(f"{name}: expected a numpy array or torch tensor, found {type(X).__name__}")
    if t.ndim != 2:
        raise InputError(f"{name}: expected shape [n_samples, n_neurons], found {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise InputError(f"{name}: expected a non-empty array, found shape {tuple(t.shape)}")
    t = t.to(device=device, dtype=torch.float32)
    if not math.isfinite(float(t.sum())) and not bool(torch.isfinite(t).all()):
        raise InputError(f"{name}: contains NaN or infinite values")
    return t


def as_labels(y: ArrayLike, n_samples: int, name: str = "y", *, min_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Check integer class ids `y: Int[n_samples]`; return (`classes` sorted, `index` into classes per sample)."""
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if arr.ndim != 1:
        raise InputError(f"{name}: expected shape [n_samples], found {arr.shape}")
    if arr.shape[0] != n_samples:
        raise InputError(f"{name}: has {arr.shape[0]} labels but X has {n_samples} samples")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise InputError(f"{name}: expected integer class ids, found dtype {arr.dtype}")
    classes, index = np.unique(arr.astype(np.int64), return_inverse=True)
    if classes.size < min_classes:
        raise InputError(f"{name}: found {classes.size} class(es), expected at least {min_classes}")
    return classes, index.astype(np.int64)


def check_xy(
    X: ArrayLike, y: ArrayLike, *, device: str | torch.device = "cpu", names: tuple[str, str] = ("X", "y")
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Validate a training pair; return (`X` float32 tensor, `classes`, class index per sample)."""
    Xt = as_features(X, names[0], device=device)
    classes, index = as_labels(y, Xt.shape[0], names[1])
    return Xt, classes, index


def column_mean_std(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-neuron mean and (population) std of `X: Float[n, d]`, by matrix-vector products (column reductions
    in torch are slow on CPU); the variance is `E[x^2] - mean^2` accumulated in float64."""
    n = X.shape[0]
    total = torch.zeros(X.shape[1], dtype=torch.float64, device=X.device)
    sq = torch.zeros_like(total)
    for chunk in X.split(4096):
        ones = torch.ones(chunk.shape[0], dtype=X.dtype, device=X.device)
        total += (ones @ chunk).double()
        if X.device.type == "cpu":
            sq += torch.from_numpy(np.einsum("ij,ij->j", chunk.numpy(), chunk.numpy()).astype(np.float64))
        else:
            sq += (ones @ (chunk * chunk)).double()
    mean = total / n
    var = (sq / n - mean * mean).clamp_min(0.0)
    return mean.float(), var.sqrt().float()


def one_hot(index: np.ndarray, n_classes: int, device: torch.device) -> torch.Tensor:
    """`Float[n_samples, n_classes]` indicator matrix of class indices."""
    out = torch.zeros(index.shape[0], n_classes, device=device)
    out[torch.arange(index.shape[0], device=device), torch.from_numpy(index).to(device)] = 1.0
    return out


def rank_desc(scores: np.ndarray) -> np.ndarray:
    """Indices sorting `scores` (last axis) from highest to lowest, ties broken by the lower index."""
    return np.argsort(-scores, axis=-1, kind="stable")


class Ranker(Estimator, ABC):
    """Base class of neuron rankers: `fit(X, y)` sets scores and rankings; helpers read them.

    An `lmscope.estimator.Estimator`: hyperparameters are `__init__` keywords, only stored (checked in `fit`).
    """

    classes_: np.ndarray
    scores_: np.ndarray
    ranking_: np.ndarray
    class_scores_: np.ndarray
    class_rankings_: np.ndarray

    @abstractmethod
    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Learn neuron scores from activations `X [n_samples, n_neurons]` and class ids `y [n_samples]`."""

    def _set_scores(self, classes: np.ndarray, scores: np.ndarray, class_scores: np.ndarray) -> None:
        """Store `scores [n_neurons]`, `class_scores [n_classes, n_neurons]` and the rankings they give."""
        self.classes_ = classes
        self.scores_ = np.asarray(scores, dtype=np.float64)
        self.class_scores_ = np.asarray(class_scores, dtype=np.float64)
        self.ranking_ = rank_desc(self.scores_)
        self.class_rankings_ = rank_desc(self.class_scores_)

    def _check_fitted(self) -> None:
        self._check_is_fitted("ranking_")

    def _check_k(self, k: int) -> int:
        self._check_fitted()
        n = self.ranking_.shape[0]
        if not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
            raise InputError(f"k: expected an integer in [0, {n}], found {k!r}")
        return int(k)

    def top(self, k: int) -> np.ndarray:
        """The `k` most important neurons `Int[k]`, best first."""
        k = self._check_k(k)
        return self.ranking_[:k].copy()

    def bottom(self, k: int) -> np.ndarray:
        """The `k` least important neurons `Int[k]`, least important first."""
        k = self._check_k(k)
        return self.ranking_[::-1][:k].copy()

    def top_for_class(self, c: int, k: int) -> np.ndarray:
        """The `k` most important neurons for class id `c` (a value of `classes_`), best first."""
        k = self._check_k(k)
        where = np.flatnonzero(self.classes_ == c)
        if where.size == 0:
            raise InputError(f"c: class {c!r} not among the fitted classes {self.classes_.tolist()}")
        return self.class_rankings_[where[0], :k].copy()


class Probeless(Ranker):
    """Probe-free ranking by class-conditional mean activations (Antverg & Belinkov, ICLR 2022).

    With `q_c = mean of X over samples of class c` (`Float[n_classes, n_neurons]`):

    - global score of neuron j: `sum over unordered class pairs {c, c'} of |q_c[j] - q_c'[j]|`, the paper's
      definition (their `get_diff_sum` over `itertools.combinations`);
    - per-class score: `|q_c[j] - r_c[j]|` with `r_c` the mean over all samples not of class c (one vs rest).

    Scores are in activation units; no probe is trained, so ranking and probe quality are not confounded.
    """

    def __init__(self) -> None:
        pass

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Compute class means `[n_classes, n_neurons]` and the pairwise / one-vs-rest differences."""
        Xt, classes, index = check_xy(X, y)
        Y = one_hot(index, classes.size, Xt.device)
        counts = Y.sum(0).double()
        sums = (Y.T @ Xt).double()  # [C, d]
        means = sums / counts[:, None]
        rest = (sums.sum(0, keepdim=True) - sums) / (Xt.shape[0] - counts)[:, None]
        class_scores = (means - rest).abs()
        pair_sum = torch.zeros(Xt.shape[1], dtype=torch.float64)
        for c in range(classes.size - 1):
            pair_sum += (means[c + 1 :] - means[c]).abs().sum(0)
        self.class_means_ = means.numpy()
        self._set_scores(classes, pair_sum.numpy(), class_scores.numpy())
        return self


class IoU(Ranker):
    """Neuron-concept overlap (Mu & Andreas, NeurIPS 2020; after Bau et al.'s Network Dissection).

    Each neuron is binarised at a threshold and its mask compared with each class's mask:
    `IoU(mask_j, y == c) = |mask_j & class_c| / |mask_j | class_c|`. Global score: max over classes.

    `quantile="class"` (default) thresholds neuron j, for class c, at its top-`n_c` activations, where `n_c`
    is the class's size: a neuron that fires on exactly that class then scores 1, whatever the class's
    frequency. A number, e.g. `quantile=0.995`, uses one mask per neuron holding its top 0.5% of samples, the
    threshold of the vision papers; for frequent word classes (a quarter of all words are nouns) that caps
    every IoU at 0.005 / 0.25 and cannot tell a noun detector from a detector of a few nouns. Samples equal
    to the neuron's minimum are never in a mask, so a constant neuron scores 0.
    """

    def __init__(self, quantile: float | str = "class") -> None:
        self.quantile = quantile

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Threshold every neuron (per class, or at one quantile) and compare masks with the class masks."""
        per_class = self.quantile == "class"
        if not per_class and not (isinstance(self.quantile, int | float) and 0.0 < float(self.quantile) < 1.0):
            raise InputError(f"quantile: expected 'class' or a number in (0, 1), found {self.quantile!r}")
        Xt, classes, index = check_xy(X, y)
        n = Xt.shape[0]
        Y = one_hot(index, classes.size, Xt.device)
        sizes = Y.sum(0).long().tolist()
        floor = Xt.min(0).values
        ms = sizes if per_class else [min(n, max(1, round((1.0 - float(self.quantile)) * n)))] * classes.size
        top_values = Xt.topk(max(ms), dim=0).values  # [max m, d], largest first
        iou = torch.empty(classes.size, Xt.shape[1], dtype=torch.float64)
        thresholds = torch.empty(classes.size, Xt.shape[1])
        for c, m in enumerate(ms):
            thresholds[c] = top_values[m - 1]
            maskf = ((Xt >= thresholds[c]) & (Xt > floor)).to(torch.float32)
            inter = (Y[:, c] @ maskf).double()
            union = maskf.sum(0).double() + sizes[c] - inter
            iou[c] = inter / union.clamp_min(1.0)
        self.thresholds_ = thresholds.numpy().astype(np.float64)  # [n_classes, d]
        self._set_scores(classes, iou.max(0).values.numpy(), iou.numpy())
        return self


class RandomRanking(Ranker):
    """The baseline: uniformly random scores (globally and per class) drawn from `seed`."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Check the input and draw random scores of the right shapes."""
        Xt, classes, _ = check_xy(X, y)
        rng = np.random.default_rng(self.seed)
        d = Xt.shape[1]
        self._set_scores(classes, rng.random(d), rng.random((classes.size, d)))
        return self
