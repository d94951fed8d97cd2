"""Every supported norm read the same way (`norm_parts`, `frozen_divisor`), and the final norm's gain folded
into `W_U` (`final_norm_gain`, `folded_W_U`, `folded_b_U`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import Gemma3ForCausalLM, Gemma3TextConfig
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from lmscope import HookedModel
from lmscope.errors import InputError
from lmscope.model import norms
from lmscope.model.norms import (
    NormKind,
    final_norm_gain,
    folded_b_U,
    folded_W_U,
    frozen_divisor,
    norm_kind,
    norm_parts,
    register_norm,
)
from tiny_models import tiny_hf_model


def test_layernorm_is_affine_with_the_frozen_divisor() -> None:
    torch.manual_seed(0)
    ln = nn.LayerNorm(16, eps=1e-3)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(5, 7, 16) * 3 + 1
    parts = norm_parts(ln)
    assert parts.centers and parts.eps == 1e-3 and parts.bias is not None
    div = frozen_divisor(ln, x)
    assert div.shape == (5, 7)
    rebuilt = parts.weight * (x - x.mean(-1, keepdim=True)) / div[..., None] + parts.bias
    torch.testing.assert_close(rebuilt, ln(x).detach())


def test_rmsnorm_reads_variance_epsilon_and_does_not_centre() -> None:
    torch.manual_seed(1)
    rms = LlamaRMSNorm(16, eps=1e-4)
    with torch.no_grad():
        rms.weight.normal_()
    x = torch.randn(3, 16) + 2
    parts = norm_parts(rms)
    assert not parts.centers and parts.eps == 1e-4 and parts.bias is None
    torch.testing.assert_close(parts.weight * x / frozen_divisor(rms, x)[..., None], rms(x).detach())


def test_gemma_rmsnorm_gain_is_one_plus_weight() -> None:
    torch.manual_seed(2)
    rms = Gemma3RMSNorm(16, eps=1e-3)
    with torch.no_grad():
        rms.weight.normal_()
    x = torch.randn(3, 16) + 2
    parts = norm_parts(rms)
    assert not parts.centers and parts.eps == 1e-3 and parts.bias is None
    assert torch.equal(parts.weight, 1 + rms.weight.detach())
    torch.testing.assert_close(parts.weight * x / frozen_divisor(rms, x)[..., None], rms(x).detach())
    with torch.no_grad():
        rms.weight.zero_()  # Gemma's initial norm: the identity gain, not zero
    assert torch.equal(norm_parts(rms).weight, torch.ones(16))


def test_unknown_norms_are_refused_until_registered() -> None:
    class HalfNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.epsilon = 0.5
            self.weight = nn.Parameter(torch.full((4,), 2.0))

    with pytest.raises(InputError, match=r"^norm HalfNorm: not a norm lmscope knows "
                                         r"\(known: .*LayerNorm, LlamaRMSNorm"):
        norm_parts(HalfNorm())
    register_norm(HalfNorm, NormKind(centers=False, eps_attr="epsilon"))
    try:
        parts = norm_parts(HalfNorm())
        assert parts.eps == 0.5 and torch.equal(parts.weight, torch.full((4,), 2.0))
        assert norm_kind(type("SubNorm", (HalfNorm,), {})()) == norm_kind(HalfNorm())  # found through the base
    finally:
        del norms._KINDS["HalfNorm"]


def _tiny_gemma() -> nn.Module:
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                           sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                           bos_token_id=2, eos_token_id=1, pad_token_id=0)
    return Gemma3ForCausalLM(cfg).eval()


def _randomize_final_norm(model: HookedModel) -> None:
    norm = model.adapter.ln_final()
    with torch.no_grad():
        norm.weight.normal_(0.5, 0.5)
        if getattr(norm, "bias", None) is not None:
            norm.bias.normal_()


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3_text"])
def test_folded_W_U_gives_the_logits_from_the_normalised_stream(family: str, tokens: torch.Tensor) -> None:
    model = HookedModel(_tiny_gemma() if family == "gemma3_text" else tiny_hf_model(family))
    _randomize_final_norm(model)
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    logits, cache = model.run_with_cache(tokens, names=[last])
    x, norm = cache[last], model.adapter.ln_final()
    parts = norm_parts(norm)
    centred = x - x.mean(-1, keepdim=True) if parts.centers else x
    normalized = centred / frozen_divisor(norm, x)[..., None]  # the norm without its affine part
    torch.testing.assert_close(normalized @ folded_W_U(model) + folded_b_U(model), logits, atol=1e-4, rtol=1e-4)
    gain = final_norm_gain(model)
    expected_gain = 1 + norm.weight.detach() if family == "gemma3_text" else norm.weight.detach()
    assert gain.shape == (model.cfg.d_model,) and torch.equal(gain, expected_gain)
    assert torch.equal(folded_W_U(model, fold=False), model.W_U)
    assert folded_b_U(model).abs().max() > 0 if family == "gpt2" else not folded_b_U(model).any()


def test_folded_W_U_is_invariant_to_moving_the_gain_into_W_U(tokens: torch.Tensor) -> None:
    """A logit-identical reparametrisation (final gain scaled by s, W_U rows by 1/s) leaves the folded view
    unchanged while the raw W_U moves."""
    model = HookedModel(tiny_hf_model("llama"))  # untied embeddings: W_U can change alone
    _randomize_final_norm(model)
    before_logits, before_W_U, before_folded = model(tokens), model.W_U.clone(), folded_W_U(model).clone()
    s = torch.linspace(0.5, 2.0, model.cfg.d_model)
    with torch.no_grad():
        model.adapter.ln_final().weight.mul_(s)
        model.adapter.unembed().weight.div_(s)
    torch.testing.assert_close(model(tokens), before_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(folded_W_U(model), before_folded)
    assert (model.W_U - before_W_U).abs().max() > 1e-2


def test_norm_without_weight_has_unit_gain() -> None:
    model = HookedModel(tiny_hf_model("gpt2"))
    model.hf.transformer.ln_f = nn.LayerNorm(model.cfg.d_model, elementwise_affine=False)
    assert torch.equal(final_norm_gain(model), torch.ones(model.cfg.d_model))
    assert not folded_b_U(model).any()


def _tiny_crate() -> nn.Module:
    from lmscope.model.crate import CrateForCausalLM
    from lmscope.model.crate_config import CrateConfig

    torch.manual_seed(0)
    return CrateForCausalLM(CrateConfig(vocab_size=61, n_positions=64, n_embd=32, n_layer=2, n_head=4)).eval()


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama", "gemma3_text", "crate"])
def test_ln1_is_the_norm_whose_output_the_attention_reads(family: str, tokens: torch.Tensor) -> None:
    """`adapter.ln1(layer)` applied to `hook_resid_pre` gives exactly what the attention module is called with."""
    hf = {"gemma3_text": _tiny_gemma, "crate": _tiny_crate}.get(family, lambda: tiny_hf_model(family))()
    model = HookedModel(hf)
    layer = 1
    seen: dict[str, torch.Tensor] = {}

    def grab(module: nn.Module, args: tuple, kwargs: dict) -> None:
        seen["x"] = args[0] if args else kwargs["hidden_states"]

    handle = model.adapter.attn(layer).register_forward_pre_hook(grab, with_kwargs=True)
    try:
        _, cache = model.run_with_cache(tokens, names=[f"blocks.{layer}.hook_resid_pre"])
    finally:
        handle.remove()
    with torch.no_grad():
        torch.testing.assert_close(model.adapter.ln1(layer)(cache[f"blocks.{layer}.hook_resid_pre"]), seen["x"],
                                   atol=0, rtol=0)
