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


def assert_all_hooks_bit_identical(model: HookedModel, inputs: object) -> dict[str, torch.Tensor]:
    """Capturing every hook point leaves the logits `torch.equal` to the bare HF forward on the same batch
    (with its padding mask); returns the cache."""
    batch = model.to_tokens(inputs)  # type: ignore[arg-type]
    mask = None if bool(batch.attention_mask.all()) else batch.attention_mask
    with torch.no_grad():
        bare = model.hf(input_ids=batch.input_ids, attention_mask=mask, use_cache=False).logits
    logits, cache = model.run_with_cache(batch)
    assert logits is not None and torch.equal(logits, bare), (logits - bare).abs().max()
    assert set(cache) == set(model.hook_names)
    return cache


def assert_residual_identities(model: HookedModel, cache: dict[str, torch.Tensor]) -> None:
    """Exactly (`torch.equal`, the model adds these very tensors): `resid_mid = resid_pre + attn_out`,
    `resid_post = resid_mid + mlp_out`, and each block's `resid_post` is the next block's `resid_pre`."""
    for layer in range(model.cfg.n_layers):
        p = f"blocks.{layer}."
        mid = cache[p + "hook_resid_mid"]
        assert torch.equal(mid, cache[p + "hook_resid_pre"] + cache[p + "hook_attn_out"]), layer
        assert torch.equal(cache[p + "hook_resid_post"], mid + cache[p + "hook_mlp_out"]), layer
        if layer + 1 < model.cfg.n_layers:
            assert torch.equal(cache[p + "hook_resid_post"], cache[f"blocks.{layer + 1}.hook_resid_pre"]), layer
