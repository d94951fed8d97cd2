"""SAEs and transcoders recover planted sparse features (toy models of superposition)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lmscope.dictionary import SAE, Transcoder

COMMON = dict(d_sae=128, lr=3e-3, batch_size=256, n_steps=1000, dead_after=256 * 50, seed=0)
ACTS = [dict(activation="relu", l1_coefficient=0.1), dict(activation="topk", k=4)]


@pytest.mark.parametrize("act", ACTS, ids=["relu", "topk"])
def test_sae_recovers_planted_directions(act: dict, planted: Any) -> None:
    D = planted.unit_rows(64, 32, torch.Generator().manual_seed(0))  # 64 directions in R^32, ~3 active per row
    X = planted.codes(8192, seed=1) @ D
    sae = SAE(**COMMON, **act).fit(X[:6144])
    assert planted.mean_max_cos(D, sae.dictionary_.W_dec.detach()) >= 0.9
    s = sae.score(X[6144:])
    assert s["fvu"] < 0.2 and s["l0"] < 12
    assert len(sae.history_) == sae.n_steps_ == 1000 and sae.dead_mask_.shape == (128,)
    z = sae.transform(X[:10])
    assert z.shape == (10, 128) and sae.reconstruct(X[:10]).shape == (10, 32)


@pytest.mark.parametrize("act", ACTS, ids=["relu", "topk"])
def test_transcoder_recovers_planted_map(act: dict, planted: Any) -> None:
    g = torch.Generator().manual_seed(2)
    U, V = planted.unit_rows(64, 32, g), planted.unit_rows(64, 24, g)  # x = Σ a_i u_i  ->  y = Σ a_i v_i
    a = planted.codes(8192, seed=3)
    X, Y = a @ U, a @ V
    tc = Transcoder(**COMMON, **act).fit(X[:6144], Y[:6144])
    assert tc.dictionary_.cfg.d_out == 24
    assert planted.mean_max_cos(V, tc.dictionary_.W_dec.detach()) >= 0.9
    assert tc.score(X[6144:], Y[6144:])["fvu"] < 0.25
