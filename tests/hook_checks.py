"""Checks every family's hooks must pass, shared by the HF families' tests and CRATE's."""

from __future__ import annotations

import torch

from lmscope import HookedModel


def assert_pattern_replacement_is_used(model: HookedModel, tokens: torch.Tensor, base: torch.Tensor) -> None:
    """Replacing layer 0's pattern by itself keeps the logits `base`; attending only to position 0 makes
    every position's `hook_z` a copy of position 0's value."""
    same = model.run_with_hooks(tokens, hooks=[("blocks.0.attn.hook_pattern", lambda t, *, hook: t.clone())])
    torch.testing.assert_close(same, base, atol=1e-5, rtol=1e-5)

    def first_only(t: torch.Tensor, *, hook: object) -> torch.Tensor:
        out = torch.zeros_like(t)
        out[..., 0] = 1
        return out

    _, edited = model.run_with_cache(tokens, names=["blocks.0.attn.hook_z"],
                                     hooks=[("blocks.0.attn.hook_pattern", first_only)])
    z = edited["blocks.0.attn.hook_z"]
    assert torch.allclose(z, z[:, :1].expand_as(z), atol=1e-6)
