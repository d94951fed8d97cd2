from __future__ import annotations

import json

import numpy as np
import pytest

from lmscope.errors import InputError
from lmscope.neurons import LinearProbe, Probeless, accuracy_at_k, selectivity
from neurons.planted import planted


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = planted(n=2000, seed=0)
    Xte, yte = planted(n=1000, seed=1)
    return X, y, Xte, yte


def _graded(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Planted data plus weak signal in neurons 0..31, so a random subset beats the pure-noise bottom."""
    X = X.copy()
    for j in range(32):
        if j != 17:
            X[:, j] += 0.6 * (y == j % 3)
    return X


def test_accuracy_at_k_orders_top_random_bottom(split, tmp_path) -> None:
    X, y, Xte, yte = split
    X, Xte = _graded(X, y), _graded(Xte, yte)
    ranking = Probeless().fit(X, y).ranking_
    assert set(ranking[:2].tolist()) == {17, 40} and np.all(ranking[-20:] >= 32)
    result = accuracy_at_k(X, y, Xte, yte, ranking, [4, 8, 16], seed=0)
    assert result.ks == [4, 8, 16]
    for top, rand, bottom in zip(result.top, result.random, result.bottom, strict=True):
        assert top > rand + 0.1
        assert rand >= bottom
        assert bottom < 0.42  # pure noise: chance is ~1/3
    assert np.mean(result.random) > np.mean(result.bottom) + 0.05
    assert result.top[0] > 0.99  # the two planted neurons separate all three classes
    assert result.all_neurons > 0.99
    values, counts = np.unique(y, return_counts=True)
    assert result.majority == pytest.approx(np.mean(yte == values[np.argmax(counts)]))
    data = result.to_dict()
    assert json.loads(json.dumps(data)) == data
    path = result.save(tmp_path)
    assert json.loads(path.read_text())["top"] == result.top


def test_accuracy_at_k_random_baseline_averages_low(split) -> None:
    X, y, Xte, yte = split
    ranking = Probeless().fit(X, y).ranking_
    result = accuracy_at_k(X, y, Xte, yte, ranking, [1], probe=LinearProbe(l1=1e-4), seed=5)
    assert result.bottom[0] < 0.42  # a noise neuron: chance level is ~0.33
    assert result.top[0] > 0.6  # neuron 17 alone identifies class 2: ~2/3


def test_accuracy_at_k_refuses_bad_input(split) -> None:
    X, y, Xte, yte = split
    good = np.arange(64)
    with pytest.raises(InputError, match=r"ranking: expected a permutation of the 64 neuron indices, found shape \(10"):
        accuracy_at_k(X, y, Xte, yte, good[:10], [1])
    with pytest.raises(InputError, match=r"ks: expected a non-empty list of integers in \[1, 64\], found \[0\]"):
        accuracy_at_k(X, y, Xte, yte, good, [0])
    with pytest.raises(InputError, match="X_test: has 10 neurons, X_train has 64"):
        accuracy_at_k(X, y, Xte[:, :10], yte, good, [1])
    with pytest.raises(InputError, match="y_train: has 1999 labels but X has 2000 samples"):
        accuracy_at_k(X, y[:-1], Xte, yte, good, [1])


def test_selectivity_positive_with_token_identity_control() -> None:
    rng = np.random.default_rng(0)
    n_tokens = 500
    token_train, token_test = rng.integers(0, n_tokens, 2000), rng.integers(0, n_tokens, 1000)
    control = rng.integers(0, 4, n_tokens)  # a fixed random label per token type (Hewitt & Liang)
    X, y = planted(n=2000, seed=0)
    Xte, yte = planted(n=1000, seed=1)
    result = selectivity(X, y, Xte, yte, control[token_train], control[token_test])
    assert result.task_accuracy > 0.99
    assert result.control_accuracy < 0.4
    assert result.selectivity == pytest.approx(result.task_accuracy - result.control_accuracy)
    assert result.selectivity > 0.5
    few = selectivity(X, y, Xte, yte, control[token_train], control[token_test], neurons=[17, 40])
    assert few.n_neurons == 2 and few.selectivity > 0.5
    assert json.loads(json.dumps(few.to_dict()))["kind"] == "selectivity"
    with pytest.raises(InputError, match=r"neurons: expected a non-empty list of indices in \[0, 64\), found \[99\]"):
        selectivity(X, y, Xte, yte, control[token_train], control[token_test], neurons=[99])
    with pytest.raises(InputError, match="yc_train: has 5 labels but X has 2000 samples"):
        selectivity(X, y, Xte, yte, control[token_train][:5], control[token_test])
