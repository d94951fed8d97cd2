"""CRATE: ISTA and MSSA against their formulas, the spine's parity on it, HF save/load, the zoo specs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from hook_checks import assert_pattern_replacement_is_used
from lmscope import HookedModel
from lmscope.model import zoo
from lmscope.model.crate import ISTA, CrateForCausalLM
from lmscope.model.crate_config import CrateConfig
from lmscope.model.parity import check_parity


def tiny_crate(mode: str = "overcomplete", **overrides: object) -> CrateForCausalLM:
    torch.manual_seed(0)
    cfg = CrateConfig(vocab_size=61, n_positions=64, n_embd=32, n_layer=2, n_head=4, ista_mode=mode, **overrides)
    return CrateForCausalLM(cfg).eval()


def _relu(v: float) -> float:
    return max(v, 0.0)


def test_overcomplete_ista_equals_its_formula_on_hand_made_tensors() -> None:
    """A1 = ReLU(eta D^T x - eta lambda), A2 = ReLU(A1 + eta D^T (x - D A1) - eta lambda), output D A2."""
    ista = ISTA(CrateConfig(n_embd=2, n_head=1, ista_expansion=2, ista_step=0.1, ista_lambda=0.2))
    D = [[1.0, 0.0, 2.0, -1.0], [0.0, 1.0, 1.0, 1.0]]  # d = 2, m d = 4
    x = [3.0, -1.0]
    eta, lam = 0.1, 0.2
    dtx = [sum(D[i][j] * x[i] for i in range(2)) for j in range(4)]
    a1 = [_relu(eta * dtx[j] - eta * lam) for j in range(4)]
    r = [x[i] - sum(D[i][j] * a1[j] for j in range(4)) for i in range(2)]
    a2 = [_relu(a1[j] + eta * sum(D[i][j] * r[i] for i in range(2)) - eta * lam) for j in range(4)]
    out = [sum(D[i][j] * a2[j] for j in range(4)) for i in range(2)]
    with torch.no_grad():
        ista.D.copy_(torch.tensor(D))
    codes: list[torch.Tensor] = []
    ista.decode.register_forward_pre_hook(lambda m, args: codes.append(args[0]))
    got = ista(torch.tensor([[x]]))
    assert a2 == pytest.approx([0.436, 0.0, 0.664, 0.0]) and out == pytest.approx([1.764, 0.664])  # by hand
    torch.testing.assert_close(codes[0][0, 0], torch.tensor(a2))
    torch.testing.assert_close(got[0, 0], torch.tensor(out))


def test_complete_ista_equals_its_formula() -> None:
    """The original CRATE step from A0 = x: A = ReLU(x + eta D^T (x - D x) - eta lambda), the output is A."""
    ista = ISTA(CrateConfig(n_embd=2, n_head=1, ista_mode="complete", ista_step=0.5, ista_lambda=0.2))
    D = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    x = torch.tensor([1.0, -1.0])
    expected = torch.relu(x + 0.5 * D.T @ (x - D @ x) - 0.1)
    with torch.no_grad():
        ista.D.copy_(D)
    torch.testing.assert_close(ista(x[None, None])[0, 0], expected)
    assert expected.tolist() == pytest.approx([1.9, 0.9])  # by hand: D x = (-1, -1), D^T (x - D x) = (2, 4)


@pytest.mark.parametrize("mode", ["overcomplete", "complete"])
def test_large_lambda_zeroes_every_code(mode: str, tokens: torch.Tensor) -> None:
    model = HookedModel(tiny_crate(mode, ista_lambda=1e4))
    _, cache = model.run_with_cache(tokens, names=["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"])
    assert all(bool((t == 0).all()) for t in cache.values())
    small = HookedModel(tiny_crate(mode))
    _, cache = small.run_with_cache(tokens, names=["blocks.0.mlp.hook_post"])
    assert 0 < float((cache["blocks.0.mlp.hook_post"] > 0).float().mean()) < 1  # default lambda: sparse, not dead


def test_variant_shapes(tokens: torch.Tensor) -> None:
    b, p = tokens.shape
    over, complete = HookedModel(tiny_crate()), HookedModel(tiny_crate("complete"))
    assert over.hf.transformer.h[0].ista.D.shape == (32, 128) and complete.hf.transformer.h[0].ista.D.shape == (32, 32)
    for model, d_code in ((over, 128), (complete, 32)):
        _, cache = model.run_with_cache(tokens, names=["blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post",
                                                       "blocks.0.hook_mlp_out"])
        assert model.cfg.d_mlp == d_code
        assert cache["blocks.0.mlp.hook_post"].shape == cache["blocks.0.mlp.hook_pre"].shape == (b, p, d_code)
        assert cache["blocks.0.hook_mlp_out"].shape == (b, p, 32)
        assert model.W_in.shape == (2, 32, d_code) and model.W_out.shape == (2, d_code, 32)


def test_mssa_is_causal_and_shares_q_k_v(tokens: torch.Tensor) -> None:
    hf = tiny_crate()
    model = HookedModel(hf)
    changed = tokens.clone()
    changed[:, 6] = (changed[:, 6] % 60) + 1
    a, b = hf(input_ids=tokens).logits, hf(input_ids=changed).logits
    assert torch.equal(a[:, :6], b[:, :6]) and not torch.allclose(a[:, 6:], b[:, 6:])
    _, cache = model.run_with_cache(tokens, names=["blocks.0.hook_resid_pre", "blocks.0.attn.hook_pattern"])
    assert torch.equal(model.W_Q, model.W_K) and torch.equal(model.W_K, model.W_V)
    z = torch.einsum("bpm,hmd->bhpd", hf.transformer.h[0].ln_1(cache["blocks.0.hook_resid_pre"]), model.W_Q[0])
    scores = z @ z.transpose(-1, -2) / math.sqrt(model.cfg.d_head)
    causal = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).tril()
    expected = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["overcomplete", "complete"])
def test_parity_and_weight_views(mode: str, tokens: torch.Tensor) -> None:
    model = HookedModel(tiny_crate(mode))
    report = check_parity(model, tokens)
    assert report.logits_equal and report.ok(tol=1e-5), report
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(cache["blocks.0.hook_mlp_out"], cache["blocks.0.hook_resid_post"])  # no residual
    if mode == "complete":  # the one complete step is linear in x: W_in, b_in give the exact pre-activation
        pre = cache["blocks.1.ln2.hook_normalized"] @ model.W_in[1] + model.b_in[1]
        torch.testing.assert_close(pre, cache["blocks.1.mlp.hook_pre"], atol=1e-5, rtol=1e-5)
    else:  # the first ISTA step: A1 = ReLU(x W_in + b_in)
        ista = model.hf.transformer.h[1].ista
        x = cache["blocks.1.ln2.hook_normalized"]
        torch.testing.assert_close(x @ model.W_in[1] + model.b_in[1], ista.eta * x @ ista.D - ista.eta * ista.lam)


def test_hooks_edit_crate_and_are_removed(tokens: torch.Tensor) -> None:
    model = HookedModel(tiny_crate())
    base = model(tokens)
    assert_pattern_replacement_is_used(model, tokens, base)
    ablated = model.run_with_hooks(tokens, hooks=[("blocks.1.mlp.hook_post", lambda t, *, hook: t * 0)])
    assert not torch.allclose(ablated, base)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.hf.modules())
    assert not hasattr(model.hf.transformer.h[0].attn, "_lmscope_pattern_hook")


def test_right_padding_leaves_real_positions_unchanged(tokens: torch.Tensor) -> None:
    hf = tiny_crate()
    mask = torch.ones_like(tokens)
    mask[1, 7:] = 0
    padded = hf(input_ids=tokens, attention_mask=mask).logits
    alone = hf(input_ids=tokens[1:2, :7]).logits
    torch.testing.assert_close(padded[1, :7], alone[0], atol=1e-5, rtol=1e-5)


def test_save_pretrained_round_trip(tmp_path: Path, tokens: torch.Tensor) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    hf = tiny_crate()
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert AutoConfig.from_pretrained(tmp_path).ista_mode == "overcomplete"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, CrateForCausalLM)
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()  # tied
    assert torch.equal(loaded(input_ids=tokens).logits, hf(input_ids=tokens).logits)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # any tokenizer: HookedModel loads one beside the model
        (tmp_path / name).write_bytes((zoo.PACKAGED / "gpt2-tiny" / name).read_bytes())
    hooked = HookedModel.from_pretrained(str(tmp_path))
    assert hooked.cfg.family == "crate" and torch.equal(hooked.W_out, HookedModel(hf).W_out)


def test_zoo_specs_match_gpt2_tiny() -> None:
    """crate-tiny and gpt2-tiny-relu: gpt2-tiny's depth, width, heads, token budget (same corpus function)."""
    base = zoo.SPECS["gpt2-tiny"]
    crate, relu = zoo.SPECS["crate-tiny"], zoo.SPECS["gpt2-tiny-relu"]
    assert relu.arch == {**base.arch, "activation_function": "relu"} and relu.train == base.train
    assert crate.train == base.train
    model = zoo.build(crate, vocab_size=97, bos_id=0)
    assert isinstance(model, CrateForCausalLM)
    c = HookedModel(model).cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.d_mlp) == (base.arch["n_layer"], base.arch["n_embd"],
                                                           base.arch["n_head"], base.arch["n_inner"])
