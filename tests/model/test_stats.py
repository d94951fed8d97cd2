"""Neuron statistics agree with a direct computation on a planted activation."""

from __future__ import annotations

import torch

from lmscope import HookedModel
from lmscope.model.stats import neuron_stats
from tiny_models import tiny_hf_model


def test_neuron_stats_find_planted_neuron(tokens: torch.Tensor) -> None:
    hf = tiny_hf_model("gpt2")
    model = HookedModel(hf)
    # plant: neuron 3 of layer 1 fires hugely exactly on token 7
    with torch.no_grad():
        hf.transformer.h[1].mlp.c_fc.weight[:, 3] = 0
        hf.transformer.h[1].mlp.c_fc.bias[3] = -5.0
    tokens = tokens.clone()
    tokens[0, 4] = 7
    hook = ("blocks.1.mlp.hook_post", lambda t, *, hook: _plant(t, tokens))
    with model.hooks([hook]):
        stats = neuron_stats(model, tokens, top_k=1)
    assert [s.layer for s in stats] == [0, 1]
    assert stats[1].top_neuron == 3 and stats[1].top_tokens == ["7"]
    assert stats[1].max == 100.0
    assert 0 < stats[1].frac_active < 1 and len(stats[1].neuron_density) == model.cfg.d_mlp


def _plant(t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    out = t.clone()
    out[..., 3] = (tokens == 7).float() * 100.0
    return out
