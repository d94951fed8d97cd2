"""Reconstruction and sparsity metrics of a dictionary on held-out rows.

FVU (fraction of variance unexplained) is `Σ ||y - ŷ||² / Σ ||y - mean(y)||²`, against the target's
mean over the evaluated rows (not against zero, SAELens's old bug): predicting the mean gives 1.0.
Everything is accumulated batch by batch in float64, so the result does not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lmscope.dictionary.modules import Dictionary

DENSITY_BINS = np.linspace(-8.0, 0.0, 33)  # log10 feature density, 0.25-decade bins


def fvu(y: Tensor, y_hat: Tensor) -> float:
    """Fraction of variance unexplained of `y_hat` for `y`, both `Float[Tensor, "n d"]`."""
    y64, r64 = y.double(), (y - y_hat).double()
    total = ((y64 - y64.mean(0)) ** 2).sum()
    return float((r64**2).sum() / total)


def l0(z: Tensor) -> float:
    """Mean number of nonzero latents per row of `z: Float[Tensor, "n d_sae"]`."""
    return float((z != 0).sum(-1).double().mean())


def feature_density(z: Tensor) -> Tensor:
    """Fraction of rows on which each latent fires: `Float[Tensor, "d_sae"]`."""
    return (z != 0).double().mean(0)


def density_histogram(density: Tensor, bins: np.ndarray = DENSITY_BINS) -> tuple[list[int], list[float]]:
    """Counts of log10(density) in `bins` (densities below the first edge land in the first bin; dead
    latents, density 0, are left out: they are `dead_fraction`)."""
    d = density[density > 0].numpy()
    counts, edges = np.histogram(np.clip(np.log10(d), bins[0], bins[-1]), bins=bins)
    return [int(c) for c in counts], [float(e) for e in edges]


@dataclass
class DictionaryMetrics:
    """L0, FVU, dead/dense fractions and the feature-density histogram on `n_rows` held-out rows."""

    n_rows: int
    l0: float
    fvu: float
    mse: float  # mean over rows of ||y - ŷ||² (summed over d_out, as the training loss)
    dead_fraction: float  # latents that never fire on these rows
    dense_fraction: float  # latents that fire on more than `dense_threshold` of the rows
    dense_threshold: float
    density_hist: list[int] = field(default_factory=list)
    density_log10_edges: list[float] = field(default_factory=list)
    density: list[float] = field(default_factory=list, repr=False)  # per latent

    @property
    def explained_variance(self) -> float:
        return 1.0 - self.fvu

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "explained_variance": self.explained_variance}


class _Accumulator:
    """Streaming sums for FVU, L0 and density (float64)."""

    def __init__(self) -> None:
        self.n = 0
        self.sq_err = 0.0
        self.sum_y: Tensor | None = None
        self.sum_yy = 0.0
        self.nnz = 0
        self.fires: Tensor | None = None

    def add(self, y: Tensor, y_hat: Tensor, z: Tensor) -> None:
        y64 = y.double()
        self.n += y.shape[0]
        self.sq_err += float(((y64 - y_hat.double()) ** 2).sum())
        s = y64.sum(0)
        self.sum_y = s if self.sum_y is None else self.sum_y + s
        self.sum_yy += float((y64**2).sum())
        fired = z != 0
        self.nnz += int(fired.sum())
        f = fired.sum(0, dtype=torch.float64)
        self.fires = f if self.fires is None else self.fires + f

    def result(self, dense_threshold: float) -> DictionaryMetrics:
        if self.n == 0 or self.sum_y is None or self.fires is None:
            raise ValueError("no rows to evaluate")
        mean = self.sum_y / self.n
        total = self.sum_yy - self.n * float((mean**2).sum())
        density = self.fires / self.n
        counts, edges = density_histogram(density)
        return DictionaryMetrics(
            n_rows=self.n, l0=self.nnz / self.n, fvu=self.sq_err / total if total > 0 else float("nan"),
            mse=self.sq_err / self.n, dead_fraction=float((density == 0).double().mean()),
            dense_fraction=float((density > dense_threshold).double().mean()), dense_threshold=dense_threshold,
            density_hist=counts, density_log10_edges=edges, density=[float(v) for v in density])


@torch.no_grad()
def evaluate(dictionary: Dictionary, X: Tensor | Iterable[tuple[Tensor, Tensor]], Y: Tensor | None = None, *,
             batch_size: int = 4096, dense_threshold: float = 0.1) -> DictionaryMetrics:
    """Metrics of `dictionary` on rows `X: Float[Tensor, "n d_in"]` with targets `Y: Float[Tensor, "n d_out"]`
    (`Y = X` for an SAE), or on an iterable of `(x, y)` batches."""
    acc = _Accumulator()
    if isinstance(X, Tensor):
        target = X if Y is None else Y
        batches: Iterable[tuple[Tensor, Tensor]] = (
            (X[i:i + batch_size], target[i:i + batch_size]) for i in range(0, X.shape[0], batch_size))
    else:
        batches = X
    was_training = dictionary.training
    dictionary.eval()
    try:
        for x, y in batches:
            y_hat, z = dictionary(x)
            acc.add(y, y_hat, z)
    finally:
        dictionary.train(was_training)
    return acc.result(dense_threshold)
