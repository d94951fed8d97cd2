"""Gaussian probe with greedy neuron selection (Torroba Hennigen, Williams & Cotterell, EMNLP 2020).

A generative classifier: `p(x | c) = N(mu_c, Sigma_c)` on the selected neurons, `p(c)` the class frequencies.
Its marginals on any subset of neurons are free (slice mu and Sigma), which is what makes greedy selection
over subsets cheap: here each greedy step is a rank-one update, never a refit per candidate.
"""

from __future__ import annotations

import math
from typing import Self

import numpy as np
import torch

from lmscope.errors import InputError
from lmscope.neurons.rankers import ArrayLike, Ranker, check_xy, column_mean_std, one_hot


class GaussianProbe(Ranker):
    """Class-conditional Gaussians on greedily selected neurons; ranking = selection order.

    Features are z-scored; each class gets `Sigma_c = sample covariance + reg * I` (`covariance="per_class"`)
    or all share the pooled within-class covariance (`"shared"`, less memory). Greedy forward selection adds,
    at each step, the neuron that most increases the training-set mean log-likelihood of the true class,
    `mean_i log p(y_i | x_i[S])` (the criterion of Torroba Hennigen et al.; it is the mutual-information
    estimate minus the label entropy), until `max_neurons` are selected.

    Vectorised step: with `P = Sigma_{.|S}` the partial covariance given the selected set S and
    `R = X - X_S B` the regression residuals, adding neuron j contributes the univariate conditional density
    `N(R[:, j] - m_c[j]; 0, P[j, j])` to each class's log-density. All candidates are scored at once from
    `R`, and adding neuron s is a rank-one update of `R`, `P` and the class offsets `m`.
    Cost per step `O(n_classes * n * n_neurons)`; memory `n_classes * n * n_neurons` floats for per-class
    covariances, `n * n_neurons` for shared.

    Learned: `selected_` (selection order), `gains_` (increase of the criterion, nats per sample, per step),
    `log_likelihoods_` (criterion after each step), `single_scores_ [n_neurons]` (criterion with that neuron
    alone). `ranking_` = `selected_` then the rest by `single_scores_`; `scores_` is the matching rank score
    `(n_neurons - position) / n_neurons`. `class_scores_[c, j]` = mean over samples of class c of
    `log p(c | x_j) - log p(c)` with neuron j alone (information about class c, nats).
    """

    def __init__(self, max_neurons: int = 50, reg: float = 1e-3, covariance: str = "per_class") -> None:
        self.max_neurons = max_neurons
        self.reg = reg
        self.covariance = covariance

    def _check_params(self) -> None:
        if not isinstance(self.max_neurons, (int, np.integer)) or self.max_neurons < 0:
            raise InputError(f"max_neurons: expected an integer >= 0, found {self.max_neurons!r}")
        if not isinstance(self.reg, (int, float)) or not math.isfinite(self.reg) or self.reg <= 0:
            raise InputError(f"reg: expected a number > 0, found {self.reg!r}")
        if self.covariance not in ("per_class", "shared"):
            raise InputError(f"covariance: expected 'per_class' or 'shared', found {self.covariance!r}")

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Estimate the class Gaussians and run the greedy selection."""
        self._check_params()
        Xt, classes, index = check_xy(X, y)
        n, d = Xt.shape
        C = classes.size
        mean, std = column_mean_std(Xt)
        std = torch.where(std > 1e-6 * std.max().clamp_min(1e-30), std, torch.ones_like(std))
        Z = (Xt - mean) / std  # [n, d], a copy
        Y = one_hot(index, C, Z.device)
        counts = Y.sum(0).double()
        log_prior = torch.log(counts / n)
        mu = (Y.T @ Z).double() / counts[:, None]  # [C, d]
        covs = []
        for c in range(C):
            Zc = Z[torch.from_numpy(index == c)].double() - mu[c]
            covs.append(Zc.T @ Zc)
        if self.covariance == "shared":
            P = (torch.stack(covs).sum(0) / n)[None]  # [1, d, d]
            R = Z[None].clone()  # [1, n, d]
        else:
            P = torch.stack(covs) / counts[:, None, None]  # [C, d, d]
            R = Z[None].expand(C, n, d).clone()  # [C, n, d]
        P += float(self.reg) * torch.eye(d, dtype=torch.float64)
        offsets = mu.clone()  # [C, d]: class means of the residuals
        kidx = torch.zeros(C, dtype=torch.long) if self.covariance == "shared" else torch.arange(C)
        base = torch.zeros(C, n, dtype=torch.float32)  # log N(x_S | c) accumulated over the selected set
        yi = torch.from_numpy(index)
        arange_n = torch.arange(n)
        chunk = max(1, (1 << 23) // (C * n))

        def conditional_ll(cols: slice) -> torch.Tensor:
            """`log N(x_j | x_S, c)` for candidate columns `cols`: `Float[C, n, len(cols)]`."""
            var = torch.diagonal(P, dim1=1, dim2=2)[:, cols].float()[kidx]  # [C, m]
            T = R[:, :, cols] - offsets[:, cols].float()[:, None, :]
            T.square_().mul_((-0.5 / var)[:, None, :])
            return T.add_((-0.5 * torch.log(2 * math.pi * var))[:, None, :])

        def criterion(first: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
            """Criterion per candidate `[d]`, and on the first step the per-class scores `[C, d]`."""
            out = torch.empty(d, dtype=torch.float64)
            per_class = torch.empty(C, d, dtype=torch.float64) if first else None
            for j0 in range(0, d, chunk):
                cols = slice(j0, min(d, j0 + chunk))
                logits = conditional_ll(cols).add_(base[:, :, None]).add_(log_prior.float()[:, None, None])
                log_post_true = logits[yi, arange_n, :] - torch.logsumexp(logits, dim=0)  # [n, m]
                out[cols] = log_post_true.double().mean(0)
                if per_class is not None:
                    per_class[:, cols] = (Y.T @ log_post_true).double() / counts[:, None] - log_prior[:, None]
            return out, per_class

        k_max = min(int(self.max_neurons), d)
        selected: list[int] = []
        gains: list[float] = []
        lls: list[float] = []
        current = float((log_prior[yi] - torch.logsumexp(log_prior, 0)).mean())
        single = torch.zeros(d, dtype=torch.float64)
        class_scores = torch.zeros(C, d, dtype=torch.float64)
        taken = torch.zeros(d, dtype=torch.bool)
        for step in range(max(k_max, 1)):
            values, per_class = criterion(first=step == 0)
            if step == 0:
                single = values.clone()
                assert per_class is not None
                class_scores = per_class
            if step >= k_max:
                break
            values[taken] = -math.inf
            s = int(torch.argmax(values))  # first maximum: ties go to the lower index
            selected.append(s)
            gains.append(float(values[s]) - current)
            current = float(values[s])
            lls.append(current)
            taken[s] = True
            base += conditional_ll(slice(s, s + 1))[:, :, 0]
            # Rank-one updates: condition everything on neuron s.
            ps = P[:, :, s].clone()  # [K, d]
            a = ps / ps[:, s : s + 1]  # regression coefficients on x_s
            R -= R[:, :, s : s + 1] * a.float()[:, None, :]
            offsets -= offsets[:, s : s + 1] * a[kidx]
            P -= ps[:, :, None] * a[:, None, :]
        rest = np.flatnonzero(~taken.numpy())
        rest = rest[np.argsort(-single.numpy()[rest], kind="stable")]
        ranking = np.concatenate([np.asarray(selected, dtype=np.int64), rest])
        scores = np.empty(d)
        scores[ranking] = (d - np.arange(d)) / d
        self.selected_ = np.asarray(selected, dtype=np.int64)
        self.gains_ = np.asarray(gains)
        self.log_likelihoods_ = np.asarray(lls)
        self.single_scores_ = single.numpy()
        self._set_scores(classes, scores, class_scores.numpy())
        return self
