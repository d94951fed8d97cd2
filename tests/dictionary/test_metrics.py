"""Metrics against closed forms and hand-made codes; module shapes and configuration checks."""

from __future__ import annotations

import pytest
import torch

from lmscope.dictionary import DictConfig, Dictionary, evaluate, feature_density, fvu, l0
from lmscope.dictionary.metrics import density_histogram
from lmscope.errors import InputError


def test_fvu_closed_form_and_mean_predictor() -> None:
    y = torch.tensor([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0]])
    y_hat = torch.tensor([[1.5, 2.0], [3.0, 1.0], [4.0, 4.0]])
    # residual sq: 0.25 + 1 + 1 = 2.25; mean (3, 2): total = (4+0) + (0+4) + (4+4) = 16
    assert fvu(y, y_hat) == pytest.approx(2.25 / 16)
    assert fvu(y, y.mean(0).expand_as(y)) == pytest.approx(1.0)
    # against zero (SAELens's old bug) it would be 2.25 / 55
    assert fvu(y, y) == 0.0


def test_l0_density_dead_dense_on_hand_made_codes() -> None:
    z = torch.tensor([[1.0, 0.0, 0.0, 2.0], [0.5, 0.0, 0.0, 0.0], [3.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert l0(z) == pytest.approx((2 + 1 + 2 + 1) / 4)
    assert feature_density(z).tolist() == [1.0, 0.0, 0.25, 0.25]
    counts, edges = density_histogram(feature_density(z))
    assert sum(counts) == 3 and edges[0] == -8.0 and edges[-1] == 0.0


def _identity_sae(d: int = 4) -> Dictionary:
    """A ReLU SAE with W_enc = W_dec = I, zero biases: reconstructs nonnegative inputs exactly."""
    m = Dictionary(DictConfig(kind="sae", d_in=d, d_sae=d, activation="relu"))
    with torch.no_grad():
        m.W_enc.copy_(torch.eye(d))
        m.W_dec.copy_(torch.eye(d))
        m.b_enc.zero_()
        m.b_dec.zero_()
    return m


def test_evaluate_streams_and_matches_hand_computation() -> None:
    m = _identity_sae()
    x = torch.tensor([[1.0, 0.0, 0.0, -1.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    met = evaluate(m, x, batch_size=3, dense_threshold=0.3)  # batches of 3 and 1: streaming sums
    # the -1 is cut by ReLU: residual sq 1; total variance around the mean
    total = float(((x - x.mean(0)) ** 2).sum())
    assert met.fvu == pytest.approx(1.0 / total)
    assert met.l0 == pytest.approx(4 / 4)
    assert met.dead_fraction == pytest.approx(2 / 4)  # latents 1 and 3 never fire
    assert met.dense_fraction == pytest.approx(1 / 4)  # latent 0 fires on 3/4 > 0.3; latent 2 on 1/4
    d = met.to_dict()
    assert d["explained_variance"] == pytest.approx(1 - met.fvu) and len(d["density"]) == 4


def test_topk_keeps_k_and_sae_ties_b_dec_in() -> None:
    m = Dictionary(DictConfig(kind="sae", d_in=8, d_sae=32, activation="topk", k=3),
                   generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 7, 8)
    y_hat, z = m(x)
    assert y_hat.shape == (5, 7, 8) and z.shape == (5, 7, 32)
    assert ((z != 0).sum(-1) <= 3).all() and (z >= 0).all()
    assert m.b_dec_in is m.b_dec
    t = Dictionary(DictConfig(kind="transcoder", d_in=8, d_sae=16, d_out=6, skip=True))
    assert t.b_dec_in.shape == (8,) and t.W_skip is not None and t(x)[0].shape == (5, 7, 6)
    assert "b_dec_in" in dict(t.named_buffers())


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(kind="x", d_in=4, d_sae=4), "kind: expected one of sae, transcoder, got 'x'"),
    (dict(activation="topk", d_in=4, d_sae=4), r"k: a TopK dictionary needs 1 <= k <= d_sae \(4\), got None"),
    (dict(d_in=4, d_sae=4, d_out=3), "an SAE reconstructs its input: d_out must equal d_in and skip must be off"),
    (dict(d_in=0, d_sae=4), "d_in, d_sae, d_out must be positive, got 0, 4, 0"),
    (dict(d_in=4, d_sae=4, dtype="int8"), "dtype: expected one of float32, float64, float16, bfloat16, got 'int8'")])
def test_bad_config_is_input_error(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        DictConfig(**kwargs)
