from __future__ import annotations

import numpy as np
import pytest
import torch

from lmscope.errors import InputError
from lmscope.neurons import GaussianProbe, IoU, LinearProbe, Probeless, RandomRanking, Ranker
from neurons.planted import CLASS1_NEURON, CLASS2_NEURON, planted

REAL_RANKERS = [
    lambda: LinearProbe(),
    lambda: Probeless(),
    lambda: IoU(),
    lambda: GaussianProbe(max_neurons=5),
]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return planted()


@pytest.mark.parametrize("make", REAL_RANKERS, ids=["lca", "probeless", "iou", "gaussian"])
def test_planted_neurons_come_first(make, data) -> None:
    X, y = data
    ranker = make().fit(X, y)
    assert ranker.class_rankings_[2][0] == CLASS2_NEURON
    assert ranker.class_rankings_[1][0] == CLASS1_NEURON
    assert set(ranker.top(2).tolist()) == {CLASS1_NEURON, CLASS2_NEURON}
    assert ranker.top_for_class(2, 1)[0] == CLASS2_NEURON


@pytest.mark.parametrize(
    "make", [*REAL_RANKERS, lambda: RandomRanking(seed=3)], ids=["lca", "probeless", "iou", "gaussian", "random"]
)
def test_common_attributes(make, data) -> None:
    X, y = data
    ranker: Ranker = make().fit(torch.from_numpy(X), torch.from_numpy(y))
    d = X.shape[1]
    np.testing.assert_array_equal(ranker.classes_, [0, 1, 2])
    assert ranker.scores_.shape == (d,) and ranker.class_scores_.shape == (3, d)
    assert sorted(ranker.ranking_.tolist()) == list(range(d))
    assert ranker.class_rankings_.shape == (3, d)
    # ranking follows the scores, higher first
    assert np.all(np.diff(ranker.scores_[ranker.ranking_]) <= 0)
    np.testing.assert_array_equal(ranker.bottom(3), ranker.ranking_[::-1][:3])
    np.testing.assert_array_equal(ranker.top(5), ranker.ranking_[:5])


def test_ties_broken_by_lower_index() -> None:
    X = np.zeros((10, 5), dtype=np.float32)
    y = np.array([0, 1] * 5)
    X[:, 1] = X[:, 3] = y  # two identical informative neurons
    ranker = Probeless().fit(X, y)
    assert ranker.ranking_.tolist() == [1, 3, 0, 2, 4]


def test_probeless_matches_definition(data) -> None:
    X, y = data
    ranker = Probeless().fit(X, y)
    means = np.stack([X[y == c].mean(0) for c in range(3)]).astype(np.float64)
    pairs = sum(np.abs(means[a] - means[b]) for a in range(3) for b in range(a + 1, 3))
    np.testing.assert_allclose(ranker.scores_, pairs, rtol=1e-4, atol=1e-5)
    rest2 = X[y != 2].mean(0)
    np.testing.assert_allclose(ranker.class_scores_[2], np.abs(means[2] - rest2), rtol=1e-4, atol=1e-5)


def test_iou_hand_example() -> None:
    # 10 samples; quantile 0.8 -> each neuron's top 2 samples form its mask.
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    X = np.zeros((10, 2), dtype=np.float32)
    X[:, 0] = np.arange(10)[::-1]  # top-2 = samples 0, 1 = exactly class 1
    X[:, 1] = np.arange(10)  # top-2 = samples 8, 9 (class 0)
    ranker = IoU(quantile=0.8).fit(X, y)
    np.testing.assert_allclose(ranker.class_scores_[1], [1.0, 0.0])
    np.testing.assert_allclose(ranker.class_scores_[0], [0.0, 2 / 8])
    assert ranker.ranking_.tolist() == [0, 1]


def test_gaussian_selection_order_then_single_scores(data) -> None:
    X, y = data
    ranker = GaussianProbe(max_neurons=3).fit(X, y)
    assert set(ranker.selected_[:2].tolist()) == {CLASS1_NEURON, CLASS2_NEURON}
    np.testing.assert_array_equal(ranker.ranking_[:3], ranker.selected_)
    rest = ranker.ranking_[3:]
    assert np.all(np.diff(ranker.single_scores_[rest]) <= 0)
    assert ranker.gains_[0] > 0 and np.all(np.diff(ranker.log_likelihoods_) >= -1e-6)
    shared = GaussianProbe(max_neurons=2, covariance="shared").fit(X, y)
    assert set(shared.selected_.tolist()) == {CLASS1_NEURON, CLASS2_NEURON}


def test_gaussian_rank_one_updates_match_direct_computation() -> None:
    """After selection, the criterion equals a direct evaluation of the Gaussian classifier on the subset."""
    rng = np.random.default_rng(1)
    n, d = 400, 6
    y = rng.integers(0, 3, n)
    X = (rng.standard_normal((n, d)) + rng.standard_normal((3, d))[y] @ rng.standard_normal((d, d))).astype(np.float32)
    reg = 1e-2
    ranker = GaussianProbe(max_neurons=3, reg=reg).fit(X, y)
    Z = (X - X.mean(0)) / X.std(0)
    S = ranker.selected_
    logp = []
    for c in range(3):
        Zc = Z[y == c][:, S].astype(np.float64)
        mu = Zc.mean(0)
        cov = (Zc - mu).T @ (Zc - mu) / len(Zc) + reg * np.eye(len(S))
        diff = Z[:, S] - mu
        maha = np.einsum("ij,jk,ik->i", diff, np.linalg.inv(cov), diff)
        logp.append(np.log(np.mean(y == c)) - 0.5 * (maha + np.linalg.slogdet(2 * np.pi * cov)[1]))
    logp = np.stack(logp)
    log_post = logp[y, np.arange(n)] - np.logaddexp.reduce(logp, axis=0)
    assert ranker.log_likelihoods_[-1] == pytest.approx(log_post.mean(), abs=1e-4)


def test_random_ranking_is_seeded(data) -> None:
    X, y = data
    a, b, c = (RandomRanking(seed=s).fit(X, y) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.ranking_, b.ranking_)
    assert not np.array_equal(a.ranking_, c.ranking_)


@pytest.mark.parametrize("make", [Probeless, IoU, RandomRanking, LinearProbe, GaussianProbe])
def test_bad_input_is_refused(make) -> None:
    X, y = planted(n=50)
    with pytest.raises(InputError, match=r"^X: expected shape \[n_samples, n_neurons\], found \(50,\)$"):
        make().fit(X[:, 0], y)
    with pytest.raises(InputError, match=r"^y: has 49 labels but X has 50 samples$"):
        make().fit(X, y[:-1])
    with pytest.raises(InputError, match=r"^y: found 1 class\(es\), expected at least 2$"):
        make().fit(X, np.zeros(50, dtype=int))
    bad = X.copy()
    bad[3, 4] = np.nan
    with pytest.raises(InputError, match=r"^X: contains NaN or infinite values$"):
        make().fit(bad, y)
    with pytest.raises(InputError, match=r"^y: expected integer class ids, found dtype float64$"):
        make().fit(X, y.astype(float))


def test_helpers_refuse_bad_k_and_unknown_class(data) -> None:
    X, y = data
    ranker = Probeless().fit(X, y)
    with pytest.raises(InputError, match=r"^k: expected an integer in \[0, 64\], found 65$"):
        ranker.top(65)
    with pytest.raises(InputError, match=r"^c: class 9 not among the fitted classes \[0, 1, 2\]$"):
        ranker.top_for_class(9, 1)
    with pytest.raises(InputError, match=r"^Probeless: not fitted yet; call fit first$"):
        Probeless().top(1)
