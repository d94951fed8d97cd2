"""Entropy balancing against its defining properties, and the bootstrap / localization statistics."""

from __future__ import annotations

import pytest
import torch

from lmscope.causal import entropy_balance, gini, localization, top_k_share
from lmscope.causal.balance import one_hot_moments
from lmscope.causal.stats import bootstrap_counts, percentile_ci
from lmscope.errors import InputError


def test_entropy_balance_meets_targets_with_exponential_tilting() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g, dtype=torch.float64)
    targets = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.0, 0.0], [-0.4, 0.5, 0.2]], dtype=torch.float64)
    base = torch.rand(3, 200, generator=g, dtype=torch.float64) + 0.5
    bal = entropy_balance(x, targets, base)
    torch.testing.assert_close(bal.weights.sum(1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(bal.weights @ x, targets, atol=1e-7, rtol=0)
    assert bal.imbalance.max() < 1e-7
    # the maximum-entropy solution is an exponential tilt of the base weights: log(w / q) is linear in x
    for b in range(3):
        logratio = (bal.weights[b] / base[b]).log()
        design = torch.cat([torch.ones(200, 1, dtype=torch.float64), x], 1)
        coef = torch.linalg.lstsq(design, logratio[:, None]).solution
        torch.testing.assert_close(design @ coef, logratio[:, None], atol=1e-8, rtol=0)
        torch.testing.assert_close(coef[1:, 0], bal.lam[b], atol=1e-6, rtol=0)
        single = entropy_balance(x, targets[b], base[b : b + 1])  # batched equals one at a time
        torch.testing.assert_close(single.weights[0], bal.weights[b])


def test_entropy_balance_zero_base_weights_and_unreachable_targets() -> None:
    x = one_hot_moments(torch.tensor([0, 1, 2, 1, 2, 0]), 3)
    assert x.shape == (6, 2) and x[0].sum() == 0 and x[1, 0] == 1
    base = torch.tensor([[1.0, 1, 1, 0, 1, 1]])
    bal = entropy_balance(x, torch.tensor([0.5, 0.25]), base)
    assert bal.weights[0, 3] == 0
    torch.testing.assert_close(bal.weights[0], torch.tensor([0.125, 0.5, 0.125, 0, 0.125, 0.125],
                                                            dtype=torch.float64), atol=1e-7, rtol=0)
    far = entropy_balance(x, torch.tensor([2.0, 0.0]))  # outside the convex hull
    assert far.imbalance[0] > 0.5
    with pytest.raises(InputError, match=r"^base weights: expected shape \(1, 6\), got \(1, 5\)$"):
        entropy_balance(x, torch.tensor([0.5, 0.25]), torch.ones(1, 5))


def test_localization_scores() -> None:
    assert gini(torch.ones(10)) == pytest.approx(0.0)
    assert gini(torch.tensor([0.0, 0, 0, 5])) == pytest.approx(0.75)  # (n - 1) / n when one holds all
    assert top_k_share(torch.tensor([-3.0, 1, 1, 1, 0]), 1) == pytest.approx(0.5)
    assert top_k_share(torch.zeros(3), 1) != top_k_share(torch.zeros(3), 1)  # NaN when nothing moves
    loc = localization(torch.tensor([4.0, -4, 1, 1]), k=2)
    assert loc == {"top_k": 2, "top_k_share": pytest.approx(0.8), "gini": pytest.approx(gini(torch.tensor([4.0,
                                                                                                          4, 1, 1])))}


def test_bootstrap_counts_and_percentiles() -> None:
    counts = bootstrap_counts(7, 50, torch.Generator().manual_seed(0))
    assert counts.shape == (51, 7) and bool((counts[0] == 1).all())
    assert bool((counts.sum(1) == 7).all())
    low, high = percentile_ci(torch.arange(101, dtype=torch.float64)[:, None], 0.9)
    assert float(low[0]) == pytest.approx(5.0) and float(high[0]) == pytest.approx(95.0)
