from __future__ import annotations

import numpy as np
import pytest
import torch

from lmscope.errors import InputError
from lmscope.neurons import LinearProbe, top_neurons_by_mass
from neurons.planted import planted


def _blobs(n: int, seed: int, d: int = 40, n_classes: int = 5, shift: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """A nontrivial task: class means differ on a few neurons, lots of noise."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(123).standard_normal((n_classes, d)) * (np.arange(d) < 8) * shift
    y = rng.integers(0, n_classes, n)
    X = (rng.standard_normal((n, d)) + centers[y]) * np.linspace(0.5, 3.0, d) + 1.0
    return X.astype(np.float32), y


def _lbfgs_l2(X: np.ndarray, y: np.ndarray, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain reference: full-batch L-BFGS, L2 only, on standardised features."""
    Xt = torch.from_numpy(X).double()
    Xt = (Xt - Xt.mean(0)) / Xt.std(0, unbiased=False)
    yt = torch.from_numpy(y)
    W = torch.zeros(int(y.max()) + 1, X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(int(y.max()) + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(Xt @ W.T + b, yt) + l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def test_separable_data_is_learned() -> None:
    X, y = planted()
    probe = LinearProbe().fit(X, y)
    Xte, yte = planted(seed=1)
    assert probe.score(Xte, yte) > 0.99
    proba = probe.predict_proba(Xte)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probe.predict(Xte), probe.classes_[proba.argmax(1)])
    assert probe.coef_.shape == (3, 64) and probe.intercept_.shape == (3,)


def test_predictions_follow_argmax_with_label_ids() -> None:
    X, y = planted()
    ids = np.array([10, 20, 30])[y]
    probe = LinearProbe().fit(X, ids)
    np.testing.assert_array_equal(probe.classes_, [10, 20, 30])
    np.testing.assert_array_equal(probe.predict(X), probe.classes_[probe.predict_proba(X).argmax(1)])
    assert probe.score(X, ids) > 0.99


def test_strong_l1_gives_exact_zeros() -> None:
    X, y = planted()
    weak = LinearProbe(l1=1e-5).fit(X, y)
    strong = LinearProbe(l1=3e-2).fit(X, y)
    assert np.mean(strong.coef_ == 0) > 0.9
    assert np.mean(strong.coef_ == 0) > np.mean(weak.coef_ == 0)
    assert strong.score(X, y) > 0.95  # the planted neurons survive


def test_deterministic_from_seed() -> None:
    X, y = _blobs(1500, 0)
    a, b = LinearProbe(seed=4).fit(X, y), LinearProbe(seed=4).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.ranking_, b.ranking_)


def test_matches_plain_lbfgs_reference() -> None:
    X, y = _blobs(4000, 0)
    Xte, yte = _blobs(4000, 1)
    probe = LinearProbe(l1=0.0, l2=1e-3, max_iter=300, tol=1e-7, precision="float32").fit(X, y)
    W, b = _lbfgs_l2(X, y, 1e-3)
    Zte = (torch.from_numpy(Xte).double() - torch.from_numpy(X).double().mean(0)) / torch.from_numpy(X).double().std(
        0, unbiased=False
    )
    ref_acc = float(((Zte @ W.T + b).argmax(1).numpy() == yte).mean())
    acc = probe.score(Xte, yte)
    assert 0.4 < ref_acc < 0.95  # nontrivial
    assert abs(acc - ref_acc) <= 0.01
    np.testing.assert_allclose(probe.std_coef_, W.numpy(), atol=2e-3)
    # with the default elastic net it stays within a point too
    assert LinearProbe().fit(X, y).score(Xte, yte) >= ref_acc - 0.01


def test_importances_are_standardised_abs_weights() -> None:
    X, y = _blobs(1500, 0)
    probe = LinearProbe().fit(X, y)
    np.testing.assert_allclose(probe.class_scores_, np.abs(probe.std_coef_))
    np.testing.assert_allclose(probe.scores_, np.abs(probe.std_coef_).sum(0))
    np.testing.assert_allclose(probe.coef_ * X.std(0), probe.std_coef_, rtol=1e-4, atol=1e-7)


def test_top_neurons_by_mass_hand_example() -> None:
    W = np.array(
        [
            [0.5, -0.3, 0.1, 0.1, 0.0],  # total 1.0
            [0.0, 0.0, 0.0, -2.0, 2.0],  # total 4.0, tie: lower index first
        ]
    )
    union, per_class = top_neurons_by_mass(W, 0.5)
    assert per_class[0].tolist() == [0]  # 0.5 >= 0.5 * 1.0
    assert per_class[1].tolist() == [3]  # 2.0 >= 0.5 * 4.0
    assert union.tolist() == [3, 0]  # ordered by summed |w|: 2.0, 0.5
    _, per_class = top_neurons_by_mass(W, 0.85, classes=np.array([7, 9]))
    assert per_class[7].tolist() == [0, 1, 2]  # 0.5 + 0.3 = 0.8 < 0.85 <= 0.9
    assert per_class[9].tolist() == [3, 4]
    for fraction in (0.1, 0.33, 0.6, 0.99, 1.0):
        _, per_class = top_neurons_by_mass(W, fraction)
        for c, chosen in per_class.items():
            mass = np.abs(W[c])
            assert mass[chosen].sum() >= fraction * mass.sum() - 1e-12
            assert mass[chosen[:-1]].sum() < fraction * mass.sum()  # smallest such set
    assert top_neurons_by_mass(W, 0.0)[0].size == 0
    with pytest.raises(InputError, match=r"^fraction: expected a number in \[0, 1\], found 1\.5$"):
        top_neurons_by_mass(W, 1.5)


def test_probe_top_neurons_by_mass_finds_planted() -> None:
    X, y = planted()
    union, per_class = LinearProbe(l1=1e-2).fit(X, y).top_neurons_by_mass(0.5)
    assert per_class[2][0] == 17 and per_class[1][0] == 40
    assert {17, 40} <= set(union.tolist())


def test_refuses_bad_hyperparameters_and_shapes() -> None:
    X, y = planted(n=100)
    with pytest.raises(InputError, match=r"^l1: expected a finite number >= 0, found -1\.0$"):
        LinearProbe(l1=-1.0).fit(X, y)
    with pytest.raises(InputError, match=r"^max_iter: expected an integer >= 1, found 0$"):
        LinearProbe(max_iter=0).fit(X, y)
    with pytest.raises(InputError, match=r"^precision: expected 'auto', 'bfloat16' or 'float32', found 'float16'$"):
        LinearProbe(precision="float16").fit(X, y)
    probe = LinearProbe().fit(X, y)
    with pytest.raises(InputError, match=r"^X: has 10 neurons, the probe was fitted on 64$"):
        probe.predict(X[:, :10])
    with pytest.raises(InputError, match=r"^LinearProbe: not fitted yet; call fit first$"):
        LinearProbe().predict(X)


def test_warm_start_reaches_the_same_accuracy_in_few_steps() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(6000, 40)).astype(np.float32)
    y = (X[:, 3] + X[:, 7] > 0).astype(int) + 2 * (X[:, 11] > 0.5)
    full = LinearProbe().fit(X, y)
    cold = LinearProbe(max_iter=5).fit(X, y)
    fast = LinearProbe(warm_start_epochs=3, max_iter=5).fit(X, y)
    assert fast.n_iter_ <= 5 < full.n_iter_
    assert fast.objective_ < cold.objective_  # the warm start is closer to the optimum after the same steps
    assert fast.score(X, y) > cold.score(X, y) and fast.score(X, y) > 0.9 * full.score(X, y)
    assert set(fast.ranking_[:3]) == {3, 7, 11}
    with pytest.raises(InputError, match=r"^warm_start_epochs: expected an integer >= 0, found -1$"):
        LinearProbe(warm_start_epochs=-1).fit(X, y)


def test_bfloat16_passes_solve_nearly_the_same_problem() -> None:
    X, y = _blobs(4000, 0)
    X = X + 50.0  # a large offset: the bfloat16 copy is standardised first, so it costs no precision
    Xte, yte = _blobs(4000, 1)
    exact = LinearProbe(precision="float32").fit(X, y)
    fast = LinearProbe(precision="bfloat16").fit(X, y)  # the same iterations on the rounded copy
    assert abs(fast.score(Xte + 50.0, yte) - exact.score(Xte + 50.0, yte)) <= 0.01
    np.testing.assert_allclose(fast.std_coef_, exact.std_coef_, atol=0.01 * np.abs(exact.std_coef_).max())
    assert set(fast.ranking_[:8]) == set(exact.ranking_[:8]) == set(range(8))  # the informative neurons
