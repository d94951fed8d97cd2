"""One estimator convention (`lmscope.estimator`): rankers, probes, SAEs and transcoders all follow scikit-learn.

Known answers: `sklearn.base.clone` rebuilds every estimator with the same hyperparameters and nothing learned;
`__init__` accepts anything and `fit` refuses it in one line; a clone, a `set_params` copy and a checkpointed
run train to the same bytes as the original; the planted neurons win a grid search over the L1 strength.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from lmscope.dictionary import SAE, Transcoder
from lmscope.dictionary.train import RunConfig, TrainConfig
from lmscope.errors import InputError
from lmscope.estimator import Estimator
from lmscope.neurons import GaussianProbe, IoU, LinearProbe, Probeless, RandomRanking
from neurons.planted import CLASS1_NEURON, CLASS2_NEURON, planted

# one non-default hyperparameter each, so a clone that fell back to a default would show
ESTIMATORS = {
    "probeless": lambda: Probeless(),
    "iou": lambda: IoU(quantile=0.9),
    "random": lambda: RandomRanking(seed=7),
    "lca": lambda: LinearProbe(l1=1e-2, max_iter=30),
    "gaussian": lambda: GaussianProbe(max_neurons=3, covariance="shared"),
    "sae": lambda: SAE(12, activation="topk", k=2, batch_size=64, n_steps=5, seed=4),
    "transcoder": lambda: Transcoder(12, skip=True, batch_size=64, n_steps=5, l1_coefficient=0.1),
}


def _dict_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    D = torch.randn(16, 8, generator=g)
    codes = torch.rand(256, 16, generator=g) * (torch.rand(256, 16, generator=g) < 0.2)
    X = codes @ D
    return X, torch.relu(X @ torch.randn(8, 6, generator=g))


def _fit(est: Any) -> Any:
    if isinstance(est, Transcoder):
        return est.fit(*_dict_data())
    if isinstance(est, SAE):
        return est.fit(_dict_data()[0])
    return est.fit(*planted(n=300))


def _learned(est: Any) -> set[str]:
    return {k for k in vars(est) if k.endswith("_") and not k.startswith("_")}


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_clone_rebuilds_every_estimator_unfitted_with_its_hyperparameters(name: str) -> None:
    est = ESTIMATORS[name]()
    assert isinstance(est, Estimator) and not _learned(est)
    fitted = _fit(est)
    assert fitted is est  # fit returns self
    assert _learned(est)  # what fit learned ends in _ ...
    assert {k for k in vars(est) if not k.endswith("_")} == set(est.get_params())  # ... and nothing else is set
    copy = clone(est)
    assert type(copy) is type(est) and copy.get_params() == est.get_params() and not _learned(copy)
    assert est.clone().get_params() == est.get_params()


def test_hyperparameters_are_only_stored_and_fit_refuses_bad_ones() -> None:
    X, y = planted(n=100)
    bad_rankers = [(LinearProbe(l1=-1.0), "l1: expected a finite number >= 0"),
                   (GaussianProbe(reg=0.0), "reg: expected a number > 0"),
                   (IoU(quantile=5), "quantile: expected 'class' or a number in")]
    for est, message in bad_rankers:
        with pytest.raises(InputError, match=message):
            est.fit(X, y)
    Xd, Yd = _dict_data()
    bad_dicts = [(SAE(activation="sigmoid", n_steps=1), "activation: expected one of relu, topk"),
                 (SAE(activation="topk", n_steps=1), r"k: a TopK dictionary needs 1 <= k <= d_sae"),
                 (SAE(batch_size=0, n_steps=1), "batch_size must be positive"),
                 (SAE(d_sae=0, n_steps=1), "d_sae, d_out must be positive"),
                 (SAE(l1_coefficient=-0.1, n_steps=1), r"l1_coefficient: expected a finite number >= 0, got -0\.1"),
                 (Transcoder(lr=float("nan"), n_steps=1), "lr: expected a finite number > 0, got nan"),
                 (Transcoder(dtype="float16", n_steps=1), "float16 cannot train a dictionary")]
    for est, message in bad_dicts:
        assert est.get_params()["n_steps"] == 1  # stored as given
        with pytest.raises(InputError, match=message):
            est.fit(Xd, Yd) if isinstance(est, Transcoder) else est.fit(Xd)
    with pytest.raises(InputError, match="SAE: not fitted yet; call fit first"):
        SAE().transform(Xd)


def test_set_params_names_the_unknown_hyperparameter() -> None:
    with pytest.raises(InputError, match="skip: not a hyperparameter of SAE"):
        SAE().set_params(skip=True)  # only a transcoder has a linear skip
    with pytest.raises(InputError, match="out_dir: not a hyperparameter of Transcoder"):
        Transcoder().clone(out_dir="x")  # a run setting: fit(..., run=RunConfig(out_dir=...))
    assert LinearProbe().set_params(l1=0.5).l1 == 0.5


def test_training_hyperparameters_are_declared_once() -> None:
    """TrainConfig's fields are every estimator's training keywords, what the trainer gets and what cfg.json
    records; run settings are in neither."""
    train = {f.name for f in fields(TrainConfig)}
    run = {f.name for f in fields(RunConfig)}
    for est in (SAE(beta1=0.5), Transcoder(beta1=0.5)):
        params = est.get_params()
        assert train <= set(params) and not run & set(params)
        assert TrainConfig.of(est).beta1 == 0.5
    sae = SAE(8, batch_size=64, n_steps=2, lr=0.01, beta2=0.99).fit(_dict_data()[0])
    assert sae.dictionary_.cfg.train == {**TrainConfig().to_dict(), "batch_size": 64, "n_steps": 2, "lr": 0.01,
                                         "beta2": 0.99}


def test_clone_set_params_and_checkpointing_train_to_the_same_bytes(tmp_path: Path) -> None:
    X, Y = _dict_data()
    base = Transcoder(48, activation="topk", k=3, batch_size=32, n_steps=24, dead_after=32, resample_every=6,
                      seed=2).fit(X, Y)
    again = clone(base).fit(X, Y)
    via_set = Transcoder(48).set_params(activation="topk", k=3, batch_size=32, n_steps=24, dead_after=32,
                                        resample_every=6, seed=2).fit(X, Y)
    checkpointed = clone(base).fit(X, Y, run=RunConfig(out_dir=tmp_path, checkpoint_every=5))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000020.pt", "step-00000024.pt"]
    reference = base.dictionary_.state_dict()
    for other in (again, via_set, checkpointed):
        state = other.dictionary_.state_dict()
        assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in reference)
    assert any(h["n_dead"] > 0 for h in base.history_)  # dead latents: AuxK and the seeded resampling ran


def test_grid_search_over_l1_picks_the_weak_penalty() -> None:
    """scikit-learn drives a probe like its own: at l1=1 every weight is soft-thresholded to zero (chance
    accuracy, about 1/3), at l1=1e-3 the planted neurons separate the three classes."""
    X, y = planted(n=600)
    search = GridSearchCV(LinearProbe(max_iter=50), {"l1": [1.0, 1e-3]}, cv=2).fit(X, y)
    assert search.best_params_ == {"l1": 1e-3}
    assert search.best_score_ > 0.95 and np.min(search.cv_results_["mean_test_score"]) < 0.5
    assert set(search.best_estimator_.top(2).tolist()) == {CLASS1_NEURON, CLASS2_NEURON}


def test_learned_weights_read_as_attributes_with_a_trailing_underscore() -> None:
    """Before any step (n_steps=0) the weights are the documented start: a ReLU SAE's decoder rows have norm
    0.1, its encoder is the decoder transposed (tied start), b_enc is 0 and b_dec the mean of the first
    batch (here every row)."""
    X, _ = _dict_data()
    with pytest.raises(InputError, match="SAE: not fitted yet"):
        SAE().W_dec_  # noqa: B018
    sae = SAE(24, batch_size=256, n_steps=0).fit(X)
    assert sae.W_enc_.shape == (8, 24) and sae.W_dec_.shape == (24, 8)
    torch.testing.assert_close(sae.W_dec_.norm(dim=1), torch.full((24,), 0.1), atol=1e-6, rtol=0)
    assert torch.equal(sae.W_enc_, sae.W_dec_.T) and torch.equal(sae.b_enc_, torch.zeros(24))
    torch.testing.assert_close(sae.b_dec_, X.mean(0), atol=1e-6, rtol=0)
    assert not sae.W_dec_.requires_grad and sae.W_dec_.data_ptr() == sae.dictionary_.W_dec.data_ptr()


def test_run_config_refuses_what_would_be_ignored(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="checkpoint_every: expected an integer >= 0, got -5"):
        RunConfig(out_dir=tmp_path, checkpoint_every=-5)
    with pytest.raises(InputError, match="keep_checkpoints: expected an integer >= 1, got 0"):
        RunConfig(out_dir=tmp_path, checkpoint_every=5, keep_checkpoints=0)
    for settings in ({"checkpoint_every": 5}, {"resume": True}):
        with pytest.raises(InputError, match="out_dir: checkpoints and resume need a directory"):
            RunConfig(**settings)
