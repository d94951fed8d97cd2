"""HookedModel over unmodified HF models: parity, shapes, hook lifetime, stop_at_layer, errors."""

from __future__ import annotations

import pytest
import torch

from hook_checks import assert_pattern_replacement_is_used
from lmscope import HookedModel
from lmscope.errors import InputError
from lmscope.model.parity import check_parity
from tiny_models import tiny_hf_model


def test_parity_random_init(family: str, tokens: torch.Tensor) -> None:
    report = check_parity(HookedModel(tiny_hf_model(family)), tokens)
    assert report.logits_equal
    assert report.ok(tol=1e-5), report


def test_parity_sequential_neox(tokens: torch.Tensor) -> None:
    model = HookedModel(tiny_hf_model("gpt_neox", use_parallel_residual=False))
    assert "blocks.0.hook_resid_mid" in model.hook_names
    assert check_parity(model, tokens).ok(tol=1e-5)


def test_parallel_neox_refuses_resid_mid(tokens: torch.Tensor) -> None:
    model = HookedModel(tiny_hf_model("gpt_neox"))
    with pytest.raises(InputError, match=r"^hook name 'blocks\.0\.hook_resid_mid': not a hook point of this model; "
                                         r"closest: blocks\.0\.hook_resid_pre, "):
        model.run_with_cache(tokens, names=["blocks.0.hook_resid_mid"])


def test_hook_shapes(family: str, tokens: torch.Tensor) -> None:
    model = HookedModel(tiny_hf_model(family))
    c = model.cfg
    _, cache = model.run_with_cache(tokens)
    b, p = tokens.shape
    assert cache["blocks.1.attn.hook_z"].shape == (b, p, c.n_heads, c.d_head)
    assert cache["blocks.1.attn.hook_pattern"].shape == (b, c.n_heads, p, p)
    assert cache["blocks.0.mlp.hook_post"].shape == (b, p, c.d_mlp)
    assert cache["blocks.0.ln2.hook_normalized"].shape == (b, p, c.d_model)
    assert cache["ln_final.hook_normalized"].shape == (b, p, c.d_model)
    assert model.W_Q.shape == (c.n_layers, c.n_heads, c.d_model, c.d_head)
    assert model.W_O.shape == (c.n_layers, c.n_heads, c.d_head, c.d_model)
    assert model.W_in.shape == (c.n_layers, c.d_model, c.d_mlp)
    assert model.W_out.shape == (c.n_layers, c.d_mlp, c.d_model)
    assert model.W_E.shape == (c.d_vocab, c.d_model) and model.W_U.shape == (c.d_model, c.d_vocab)


def test_pattern_matches_eager_attentions(family: str, tokens: torch.Tensor) -> None:
    hf = tiny_hf_model(family)
    model = HookedModel(hf)
    _, cache = model.run_with_cache(tokens, names=["blocks.1.attn.hook_pattern"])
    hf.set_attn_implementation("eager")
    expected = hf(input_ids=tokens, output_attentions=True).attentions[1]
    torch.testing.assert_close(cache["blocks.1.attn.hook_pattern"], expected, atol=1e-6, rtol=1e-5)
    assert hf.config._attn_implementation == "eager"


def test_qk_weights_reproduce_pattern_scores(tokens: torch.Tensor) -> None:
    """W_Q/W_K per head give the attention scores of a GPT-2 layer from its LayerNorm input."""
    model = HookedModel(tiny_hf_model("gpt2"))
    _, cache = model.run_with_cache(tokens, names=["blocks.0.hook_resid_pre", "blocks.0.attn.hook_pattern"])
    x = model.hf.transformer.h[0].ln_1(cache["blocks.0.hook_resid_pre"])
    attn = model.hf.transformer.h[0].attn.c_attn
    b_q, b_k, _ = attn.bias.detach().split(model.cfg.d_model)
    q = torch.einsum("bpm,hmd->bhpd", x, model.W_Q[0]) + b_q.view(model.cfg.n_heads, 1, -1)
    k = torch.einsum("bpm,hmd->bhpd", x, model.W_K[0]) + b_k.view(model.cfg.n_heads, 1, -1)
    scores = q @ k.transpose(-1, -2) / model.cfg.d_head**0.5
    causal = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).tril()
    pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    torch.testing.assert_close(pattern, cache["blocks.0.attn.hook_pattern"], atol=1e-5, rtol=1e-4)


def test_hooks_removed_on_exit_and_on_error(family: str, tokens: torch.Tensor) -> None:
    model = HookedModel(tiny_hf_model(family))
    impl = model.hf.config._attn_implementation

    def boom(t: torch.Tensor, *, hook: object) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(tokens, hooks=[("blocks.1.hook_mlp_out", boom), ("blocks.0.attn.hook_pattern", boom)])
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.hf.modules())
    assert model.hf.config._attn_implementation == impl
    model.run_with_cache(tokens, names=["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_z"])
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.hf.modules())


def test_stop_at_layer_really_stops(family: str, tokens: torch.Tensor) -> None:
    model = HookedModel(tiny_hf_model(family))
    entered: list[str] = []
    watched = {"block0": model.adapter.blocks()[0], "attn1": model.adapter.attn(1),
               "mlp_out_proj0": model.adapter.mlp_out_proj(0), "ln_final": model.adapter.ln_final()}
    handles = [m.register_forward_pre_hook(lambda *a, k=k: entered.append(k)) for k, m in watched.items()]
    try:
        logits, cache = model.run_with_cache(tokens, names=["blocks.0.hook_resid_post"], stop_at_layer=1)
        assert logits is None and entered == ["block0", "mlp_out_proj0"]
        entered.clear()
        # return_logits=False stops right after the last capture: here inside block 0, before its MLP output
        _, early = model.run_with_cache(tokens, names=["blocks.0.mlp.hook_pre"], return_logits=False)
        assert entered == ["block0"] and list(early) == ["blocks.0.mlp.hook_pre"]
        entered.clear()
        full_logits, full = model.run_with_cache(tokens, names=["blocks.0.hook_resid_post", "blocks.0.mlp.hook_pre"])
        assert entered == ["block0", "mlp_out_proj0", "attn1", "ln_final"] and full_logits is not None
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], full["blocks.0.hook_resid_post"])
    torch.testing.assert_close(early["blocks.0.mlp.hook_pre"], full["blocks.0.mlp.hook_pre"])
    with pytest.raises(InputError, match=r"^stop_at_layer=1: hook point 'blocks\.1\.hook_resid_post' "
                                         r"is never reached$"):
        model.run_with_cache(tokens, names=["blocks.1.hook_resid_post"], stop_at_layer=1)


def test_hook_replacement_changes_downstream(tokens: torch.Tensor) -> None:
    model = HookedModel(tiny_hf_model("gpt2"))
    base = model.run_with_hooks(tokens)
    same = model.run_with_hooks(tokens, hooks=[("blocks.1.hook_resid_pre", lambda t, *, hook: t.clone())])
    assert torch.equal(base, same)
    changed = model.run_with_hooks(tokens, hooks=[("blocks.1.hook_resid_pre", lambda t, *, hook: t * 0)])
    assert not torch.allclose(base, changed)


def test_pattern_replacement_is_used(family: str, tokens: torch.Tensor) -> None:
    """Replacing the pattern by itself keeps the logits; attending only to position 0 changes them exactly."""
    model = HookedModel(tiny_hf_model(family))
    base, _cache = model.run_with_cache(tokens, names=["blocks.0.hook_resid_pre", "blocks.0.attn.hook_z"])
    assert_pattern_replacement_is_used(model, tokens, base)


def test_strings_are_padded_right_with_mask() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, **{w: i + 1 for i, w in enumerate(["a", "b", "c", "d", "e"])}}
    tok_model = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok_model.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tok_model, bos_token="<|endoftext|>", pad_token="<|endoftext|>")
    plain = HookedModel(tiny_hf_model("gpt2"), tok)  # the tokenizer has a bos_token but adds none: no BOS
    assert not plain.prepend_bos and plain.to_tokens(["a b c", "d"]).input_ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    model = HookedModel(tiny_hf_model("gpt2"), tok, prepend_bos=True)
    batch = model.to_tokens(["a b c", "d"])
    assert batch.input_ids.tolist() == [[0, 1, 2, 3], [0, 4, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    logits = model(["a b c", "d"])
    alone = model("d")
    torch.testing.assert_close(logits[1, :2], alone[0], atol=1e-5, rtol=1e-5)
    assert model.to_str_tokens("a b") == ["<|endoftext|>", "a", "b"]


KINDS = r"^inputs: expected a string, a non-empty list of strings or a token tensor, got "
SHAPE = r"^inputs: expected token ids of shape \[pos\] or \[batch, pos\], got a "


@pytest.mark.parametrize(("bad", "message"), [(3.5, KINDS + "float$"), (["a", 1], KINDS + "list$"),
                                              (torch.zeros(2, 3), SHAPE + r"torch\.float32 tensor of shape \(2, 3\)$"),
                                              (torch.zeros(1, 2, 3, dtype=torch.long),
                                               SHAPE + r"torch\.int64 tensor of shape \(1, 2, 3\)$")])
def test_bad_inputs_are_input_errors(bad: object, message: str) -> None:
    model = HookedModel(tiny_hf_model("gpt2"))
    with pytest.raises(InputError, match=message):
        model(bad)  # type: ignore[arg-type]


def test_unknown_hook_name_lists_closest(tokens: torch.Tensor) -> None:
    model = HookedModel(tiny_hf_model("gpt2"))
    with pytest.raises(InputError, match=r"^hook name 'blocks\.0\.mlp\.hook_pots': not a hook point of this model; "
                                         r"closest: blocks\.0\.mlp\.hook_post, "):
        model.run_with_cache(tokens, names=["blocks.0.mlp.hook_pots"])
    with pytest.raises(InputError, match=r"^hook on 'blocks\.0\.hook_mlp_out' returned a tensor of shape \(3, 2, 32\); "
                                         r"expected a tensor of shape \(3, 11, 32\) or None$"):
        model.run_with_hooks(tokens, hooks=[("blocks.0.hook_mlp_out", lambda t, *, hook: t[:, :2])])


def test_unsupported_architecture_lists_supported() -> None:
    from transformers import BertConfig, BertForMaskedLM

    with pytest.raises(InputError, match=r"^model type 'bert' is not supported; supported model types: gpt2, gpt_neox, "
                                         r"llama"):
        HookedModel(BertForMaskedLM(BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                               intermediate_size=32, vocab_size=50)))


def test_inputs_the_model_cannot_take_are_refused_naming_the_limit(family: str) -> None:
    """Tiny models have a 64-position context and a 61-token vocabulary (tests/tiny_models.py)."""
    model = HookedModel(tiny_hf_model(family))
    assert model.cfg.n_ctx == 64 and model.cfg.d_vocab == 61
    model.run_with_cache(torch.ones(1, 64, dtype=torch.long))  # exactly the context: runs
    too_long = torch.ones(1, 65, dtype=torch.long)
    for run in (lambda x: model.run_with_cache(x), lambda x: model.run_with_hooks(x), model.forward):
        with pytest.raises(InputError, match=r"^inputs: 65 tokens, longer than the model's context of 64 \(n_ctx\)"):
            run(too_long)
    for bad in (61, -1):
        ids = torch.tensor([[1, 2, bad]])
        with pytest.raises(InputError, match=rf"^inputs: token id {bad} is outside the model's vocabulary "
                                             r"\(ids 0\.\.60, d_vocab 61\)"):
            model.run_with_cache(ids)
    model.run_with_hooks(torch.tensor([[0, 60]]))  # the first and last ids of the vocabulary run


def test_text_longer_than_the_context_is_refused() -> None:
    from tiny_models import tiny_hooked_with_tokenizer

    model = tiny_hooked_with_tokenizer()
    n_ctx = model.cfg.n_ctx
    text = " ".join(["the"] * (n_ctx + 5))
    n = len(model.to_str_tokens(text))  # showing the tokens is not a run: no limit
    assert n > n_ctx
    with pytest.raises(InputError, match=rf"^inputs: {n} tokens, longer than the model's context of {n_ctx}"):
        model.run_with_cache(text)
