"""Interventions change exactly what they should, and compose."""

from __future__ import annotations

import pytest
import torch

from lmscope import HookedModel
from lmscope.errors import InputError
from lmscope.model.interventions import (
    AddToUnits,
    AddVector,
    MeanAblation,
    Patch,
    Replace,
    ZeroAblation,
    compute_means,
)
from tiny_models import tiny_hf_model


@pytest.fixture
def model(family: str) -> HookedModel:
    return HookedModel(tiny_hf_model(family))


def test_zero_head_ablation_changes_exactly_that_head(model: HookedModel, tokens: torch.Tensor) -> None:
    names = ["blocks.0.attn.hook_z", "blocks.0.hook_attn_out", "blocks.0.hook_resid_pre"]
    _, clean = model.run_with_cache(tokens, names=names)
    ablate = ZeroAblation("blocks.0.attn:1")
    _, abl = model.run_with_cache(tokens, names=names, hooks=ablate.hooks())
    z, z0 = abl["blocks.0.attn.hook_z"], clean["blocks.0.attn.hook_z"]
    assert torch.all(z[:, :, 1] == 0)
    keep = [h for h in range(model.cfg.n_heads) if h != 1]
    assert torch.equal(z[:, :, keep], z0[:, :, keep])
    # the output changes by exactly the head's contribution z_h @ W_O[h]
    expected = clean["blocks.0.hook_attn_out"] - z0[:, :, 1] @ model.W_O[0, 1]
    torch.testing.assert_close(abl["blocks.0.hook_attn_out"], expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(abl["blocks.0.hook_resid_pre"], clean["blocks.0.hook_resid_pre"])


def test_neuron_ablation_at_one_position(model: HookedModel, tokens: torch.Tensor) -> None:
    name = "blocks.1.mlp.hook_post"
    _, clean = model.run_with_cache(tokens, names=[name, "blocks.1.hook_mlp_out"])
    _, abl = model.run_with_cache(tokens, names=[name, "blocks.1.hook_mlp_out"],
                                  hooks=ZeroAblation([f"{name}:5@3"]).hooks())
    diff = (abl[name] != clean[name]).nonzero().tolist()
    assert diff and all(d[1:] == [3, 5] for d in diff)
    expected = clean["blocks.1.hook_mlp_out"].clone()
    expected[:, 3] -= clean[name][:, 3, 5:6] * model.W_out[1, 5]
    torch.testing.assert_close(abl["blocks.1.hook_mlp_out"], expected, atol=1e-5, rtol=1e-5)


def test_mean_ablation_sets_mean(model: HookedModel, tokens: torch.Tensor) -> None:
    name = "blocks.0.mlp.hook_post"
    means = compute_means(model, tokens, [name])
    _, clean = model.run_with_cache(tokens, names=[name])
    torch.testing.assert_close(means[name], clean[name].mean(dim=(0, 1)))
    _, abl = model.run_with_cache(tokens, names=[name], hooks=MeanAblation([f"{name}:2"], means).hooks())
    assert torch.allclose(abl[name][..., 2], means[name][2].expand(tokens.shape))
    with pytest.raises(InputError, match=r"^means: no mean for hook point 'blocks\.1\.mlp\.hook_post'; "
                                         r"compute it with compute_means\(\)$"):
        MeanAblation(["blocks.1.mlp.hook_post:2"], means)


def test_patch_from_source_cache(model: HookedModel, tokens: torch.Tensor) -> None:
    source = tokens.flip(0)
    resid = "blocks.1.hook_resid_pre"
    src_logits, src_cache = model.run_with_cache(source, names=[resid])
    patched = model.run_with_hooks(tokens, hooks=Patch(resid, src_cache).hooks())
    torch.testing.assert_close(patched, src_logits)  # the whole residual patched: output is the source's
    partial = model.run_with_hooks(tokens, hooks=Patch(f"{resid}@4", src_cache).hooks())
    base = model(tokens)
    torch.testing.assert_close(partial[:, :4], base[:, :4])  # causal: earlier positions untouched
    assert not torch.allclose(partial[:, 4], base[:, 4])


def test_add_vector_and_replace_compose(model: HookedModel, tokens: torch.Tensor) -> None:
    name = "blocks.1.hook_resid_post"
    v = torch.randn(model.cfg.d_model)
    _, clean = model.run_with_cache(tokens, names=[name])
    combo = AddVector(name, v, scale=2.0, positions=[0, 2]) + Replace(name, lambda t: t * 3)
    _, out = model.run_with_cache(tokens, names=[name], hooks=combo.hooks())
    expected = clean[name].clone()
    expected[:, [0, 2]] += 2.0 * v
    torch.testing.assert_close(out[name], expected * 3)
    with pytest.raises(InputError, match=r"^vector: size 3 does not match blocks\.1\.hook_resid_post "
                                         r"\(last dimension 32\)$"):
        model.run_with_hooks(tokens, hooks=AddVector(name, torch.ones(3)).hooks())


def test_index_out_of_range(model: HookedModel, tokens: torch.Tensor) -> None:
    with pytest.raises(InputError, match=r"^unit blocks\.0\.attn:99: index 99 out of range for blocks\.0\.attn\.hook_z "
                                         r"\(size 4 in that dimension\)$"):
        model.run_with_hooks(tokens, hooks=ZeroAblation("blocks.0.attn:99").hooks())


def test_add_to_units_shifts_a_neuron_by_its_output_row(model: HookedModel, tokens: torch.Tensor) -> None:
    name, out = "blocks.1.mlp.hook_post", "blocks.1.hook_mlp_out"
    _, clean = model.run_with_cache(tokens, names=[name, out])
    _, moved = model.run_with_cache(tokens, names=[name, out], hooks=AddToUnits(f"{name}:4@-1", 1.5).hooks())
    assert torch.equal(moved[name][:, -1, 4], clean[name][:, -1, 4] + 1.5)
    expected = clean[out].clone()
    expected[:, -1] += 1.5 * model.W_out[1, 4]
    torch.testing.assert_close(moved[out], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match=r"^value: expected a number to add, got '1\.5'$"):
        AddToUnits(f"{name}:4", "1.5")  # type: ignore[arg-type]
