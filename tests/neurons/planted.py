"""Synthetic activations with known answers, shared by the neuron tests."""

from __future__ import annotations

import numpy as np

N_NEURONS = 64
CLASS2_NEURON = 17  # fires exactly when y == 2
CLASS1_NEURON = 40  # fires exactly when y == 1


def planted(n: int = 3000, seed: int = 0, n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """`X: Float[n, 64]` Gaussian noise, y in {0, 1, 2}; neuron 17 = 4 exactly on class 2, neuron 40 on class 1.

    With three classes the two planted neurons make the data linearly separable.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = rng.standard_normal((n, N_NEURONS)).astype(np.float32)
    X[:, CLASS2_NEURON] = 0.3 * rng.standard_normal(n) + 4.0 * (y == 2)
    X[:, CLASS1_NEURON] = 0.3 * rng.standard_normal(n) + 4.0 * (y == 1)
    return X, y
