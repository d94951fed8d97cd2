"""Neuron statistics agree with a direct computation on a planted activation."""

from __future__ import annotations

import pytest
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
    assert len(stats[1].neuron_density) == model.cfg.d_mlp
    assert stats[1].neuron_density[3] == (tokens == 7).float().mean().item()  # on exactly the 7s
    # the rest against plain torch: the MLP activation's output captured from the HF module, planted the same way
    seen = []
    handle = hf.transformer.h[1].mlp.act.register_forward_hook(lambda mod, args, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            hf(tokens)
    finally:
        handle.remove()
    acts = _plant(seen[0], tokens).flatten(0, 1)  # [tokens, d_mlp]; no BOS in these ids
    assert stats[1].frac_active == (acts > 0).float().mean().item()
    assert stats[1].frac_dead == ((acts > 0).sum(0) == 0).float().mean().item()
    assert stats[1].mean == pytest.approx(acts.mean().item(), rel=1e-6)
    assert stats[1].std == pytest.approx(acts.std().item(), rel=1e-6)


def _plant(t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    out = t.clone()
    out[..., 3] = (tokens == 7).float() * 100.0
    return out
