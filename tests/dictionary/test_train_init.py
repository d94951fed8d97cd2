"""Initialisation from the first batch and decoder-norm handling, per kind and activation."""

from __future__ import annotations

from typing import Any

import torch

from lmscope.dictionary import SAE, Transcoder


def _data(planted: Any) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    U, V = planted.unit_rows(32, 12, g), planted.unit_rows(32, 8, g)
    a = planted.codes(512, m=32, p=0.1, seed=5)
    return a @ U + 0.5, a @ V - 0.25  # offsets: a nonzero input and target mean


def test_topk_transcoder_starts_from_a_zero_decoder_and_centred_preactivations(planted: Any) -> None:
    X, Y = _data(planted)
    tc = Transcoder(d_sae=48, activation="topk", k=4, batch_size=512, n_steps=0).fit(X, Y)
    m = tc.dictionary_
    assert torch.equal(m.W_dec, torch.zeros_like(m.W_dec))
    torch.testing.assert_close(m.b_dec, Y.mean(0), atol=1e-6, rtol=0)  # the one batch is every row
    with torch.no_grad():
        pre = m.encode_pre(X)
    torch.testing.assert_close(pre.mean(0), torch.zeros(48), atol=1e-5, rtol=0)  # b_enc = -mean(x) @ W_enc
    assert float(pre.std(0).min()) > 0.1  # centred, not collapsed


def test_topk_transcoder_decoder_rows_are_free_and_topk_sae_rows_unit(planted: Any) -> None:
    X, Y = _data(planted)
    common = dict(activation="topk", k=4, batch_size=128, n_steps=20, lr=1e-3, clip_grad=0.0)
    tc = Transcoder(d_sae=48, **common).fit(X, Y)
    norms = tc.dictionary_.W_dec.detach().norm(dim=1)
    # from zero, an Adam step moves an entry by at most lr·(1-β1)/sqrt(1-β2) ≈ 3.17·lr: rows of 8 entries
    # stay below 20·3.17·lr·sqrt(8) ≈ 0.18 after 20 steps, far from unit norm
    assert 0 < float(norms.max()) < 20 * 3.17e-3 * 8**0.5
    sae = SAE(d_sae=48, **common).fit(X)
    torch.testing.assert_close(sae.dictionary_.W_dec.detach().norm(dim=1), torch.ones(48), atol=1e-5, rtol=0)
    assert tc.score(X, Y)["fvu"] < 1.0  # it learned something from the zero start


def test_relu_transcoder_keeps_its_random_decoder_start(planted: Any) -> None:
    X, Y = _data(planted)
    tc = Transcoder(d_sae=48, activation="relu", l1_coefficient=0.1, batch_size=512, n_steps=0).fit(X, Y)
    torch.testing.assert_close(tc.dictionary_.W_dec.norm(dim=1), torch.full((48,), 0.1), atol=1e-6, rtol=0)
    assert torch.equal(tc.dictionary_.b_enc, torch.zeros(48))


def test_float16_training_is_refused_before_a_step() -> None:
    """Adam underflows in float16 (NaN weights after one step), so fitting in it is one line, not NaNs."""
    import pytest

    from lmscope.errors import InputError

    with pytest.raises(InputError, match="float16 cannot train a dictionary"):
        SAE(d_sae=16, n_steps=2, batch_size=32, dtype="float16").fit(torch.randn(64, 8))
    fitted = SAE(d_sae=16, n_steps=2, batch_size=32, dtype="bfloat16").fit(torch.randn(64, 8))
    assert all(torch.isfinite(p.float()).all() for p in fitted.dictionary_.parameters())
