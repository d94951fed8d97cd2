"""The Gemma family adapter on random-init Gemma 3 (text and multimodal) and Gemma 2 models built here.

The tiny Gemma 3 has local and global layers with a window (4) shorter than the test sequences, 4 query
heads sharing 2 (or 1) KV heads, `head_dim` 16 != d_model / n_heads = 8, `query_pre_attn_scalar` 24 (so
the score scale is not `head_dim ** -0.5`), every norm weight random (so `1 + weight` matters), and
queries and keys large enough that Gemma 2's attention softcap changes the pattern.
"""

from __future__ import annotations

import re

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from torch import Tensor
from transformers import PreTrainedTokenizerFast

from hook_checks import (
    assert_all_hooks_bit_identical,
    assert_pattern_replacement_is_used,
    assert_residual_identities,
)
from lmscope import HookedModel
from lmscope.errors import InputError
from lmscope.model.inputs import TokenBatch
from tiny_models import tiny_hf_model

VOCAB, D, HEADS, D_HEAD, WINDOW, SCALAR = 67, 32, 4, 16, 4, 24
LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention"]


def tiny_gemma(kind: str = "gemma3_text", *, n_kv: int = 2, impl: str | None = None,
               **overrides: object) -> torch.nn.Module:
    """A random-init Gemma of `kind` ("gemma3_text", "gemma2", "gemma3": the multimodal class) with random norms;
    `impl` the attention implementation (None: transformers' default, sdpa for Gemma 3, eager for Gemma 2)."""
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        Gemma3Config,
        Gemma3ForCausalLM,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    torch.manual_seed(0)
    shape = dict(vocab_size=VOCAB, hidden_size=D, intermediate_size=48, num_attention_heads=HEADS,
                 num_key_value_heads=n_kv, head_dim=D_HEAD, max_position_embeddings=64, sliding_window=WINDOW,
                 query_pre_attn_scalar=SCALAR, bos_token_id=2, eos_token_id=1, pad_token_id=0,
                 attn_implementation=impl)
    if kind == "gemma2":
        caps = {"attn_logit_softcapping": 0.5, "final_logit_softcapping": 3.0} | overrides
        cfg = Gemma2Config(**shape, num_hidden_layers=2, **caps)
        hf = Gemma2ForCausalLM(cfg)
    else:
        text = Gemma3TextConfig(**shape, num_hidden_layers=len(LAYER_TYPES), layer_types=LAYER_TYPES, **overrides)
        if kind == "gemma3_text":
            hf = Gemma3ForCausalLM(text)
        else:
            vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=16, patch_size=8)
            hf = Gemma3ForConditionalGeneration(Gemma3Config(
                text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=66,
                boi_token_index=64, eoi_token_index=65, attn_implementation=impl))
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if name.endswith(("norm.weight", "q_proj.weight", "k_proj.weight")):
                param.normal_(0.0, 0.5)  # non-trivial norm gains; scores large enough for the softcap to bite
    return hf.eval()


@pytest.fixture
def ids() -> Tensor:
    return torch.randint(3, 60, (2, 11), generator=torch.Generator().manual_seed(3))


def padded(ids: Tensor) -> TokenBatch:
    """Row 1 right-padded after 3 tokens: its padded queries see no real key within the window."""
    ids, mask = ids.clone(), torch.ones_like(ids)
    ids[1, 3:], mask[1, 3:] = 0, 0
    return TokenBatch(ids, mask)


def _text_model(hf: torch.nn.Module) -> torch.nn.Module:
    return hf.model.language_model if hf.config.model_type == "gemma3" else hf.model


# --- parity --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "n_kv", "impl"), [
    ("gemma3_text", 2, "sdpa"), ("gemma3_text", 1, "sdpa"), ("gemma3_text", 2, "eager"),
    ("gemma2", 2, "eager"), ("gemma3", 1, "sdpa"),
])
def test_logits_bit_identical_with_every_hook_capturing(kind: str, n_kv: int, impl: str, ids: Tensor) -> None:
    model = HookedModel(tiny_gemma(kind, n_kv=n_kv, impl=impl))
    assert model.cfg.family == "gemma" and model.cfg.model_type == kind
    assert len(model.hook_names) == 2 + 10 * model.cfg.n_layers
    for batch in (ids, padded(ids)):
        cache = assert_all_hooks_bit_identical(model, batch)
        assert_residual_identities(model, cache)
        assert not any(t.isnan().any() for t in cache.values())


def test_strings_go_in_as_the_tokenizer_encodes_them() -> None:
    words = ["<pad>", "<eos>", "<bos>", "<unk>", *[f"w{i}" for i in range(60)]]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="<pad>", unk_token="<unk>")
    hf = tiny_gemma()
    model = HookedModel(hf, tokenizer)
    texts = ["w1 w2 w3 w4 w5 w6 w7 w8 w9", "w10 w11"]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    assert enc["input_ids"][:, 0].tolist() == [2, 2]
    with torch.no_grad():
        assert torch.equal(model(texts[0]), hf(**tokenizer(texts[0], return_tensors="pt")).logits)
        assert torch.equal(model(texts), hf(**enc).logits)


# --- attention -----------------------------------------------------------------------------------
def hand_pattern(model: HookedModel, resid_pre: Tensor, layer: int) -> Tensor:
    """The pattern from `W_Q`, `W_K`: q/k norms (Gemma 3), rotary, `attn_scale`, softcap, causal + window mask."""
    from transformers.models.gemma3.modeling_gemma3 import apply_rotary_pos_emb

    a, attn = model.adapter, model.adapter.attn(layer)
    x = a.ln1(layer)(resid_pre)
    q = torch.einsum("bpd,hde->bhpe", x, model.W_Q[layer])
    k = torch.einsum("bpd,hde->bhpe", x, model.W_K[layer])
    if model.cfg.model_type != "gemma2":
        q, k = attn.q_norm(q), attn.k_norm(k)
    pos = torch.arange(x.shape[1])[None]
    rotary = _text_model(model.hf).rotary_emb
    cos, sin = rotary(x, pos, attn.layer_type) if model.cfg.model_type != "gemma2" else rotary(x, pos)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    scores = q @ k.transpose(-1, -2) * a.attn_scale(layer)
    cap = a.attn_softcap(layer)
    if cap is not None:
        scores = cap * torch.tanh(scores / cap)
    qi, ki = pos[0][:, None], pos[0][None, :]
    allowed = ki <= qi
    if a.sliding_window(layer) is not None:
        allowed &= qi - ki < a.sliding_window(layer)
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)


@pytest.mark.parametrize(("kind", "n_kv"), [("gemma3_text", 2), ("gemma3_text", 1), ("gemma2", 2)])
def test_pattern_is_the_models_own_on_local_and_global_layers(kind: str, n_kv: int, ids: Tensor) -> None:
    hf = tiny_gemma(kind, n_kv=n_kv)
    model = HookedModel(hf)
    names = [n for n in model.hook_names if n.endswith(("hook_pattern", "hook_resid_pre"))]
    _, cache = model.run_with_cache(ids, names=names)
    p = ids.shape[1]
    qi, ki = torch.arange(p)[:, None], torch.arange(p)[None, :]
    hf.set_attn_implementation("eager")
    with torch.no_grad():
        eager = hf(input_ids=ids, output_attentions=True).attentions
    for layer in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]))
        assert pattern[..., ki > qi].abs().max() == 0
        window = model.adapter.sliding_window(layer)
        far = pattern[..., (qi - ki >= WINDOW) & (ki <= qi)]
        if window is None:
            assert far.min() > 0  # global layers see keys beyond the window
        else:
            assert window == WINDOW and far.abs().max() == 0
        torch.testing.assert_close(pattern, eager[layer], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(pattern, hand_pattern(model, cache[f"blocks.{layer}.hook_resid_pre"], layer),
                                   atol=1e-5, rtol=1e-4)


def test_scale_and_softcap_are_the_configs() -> None:
    g3 = HookedModel(tiny_gemma(attn_logit_softcapping=0.5))  # Gemma 3 carries the field but never applies it
    assert g3.adapter.attn_scale(0) == pytest.approx(SCALAR ** -0.5) != D_HEAD ** -0.5
    assert g3.adapter.attn_softcap(0) is None and g3.adapter.logit_softcap is None
    assert [g3.adapter.sliding_window(layer) for layer in range(3)] == [WINDOW, None, WINDOW]
    g2 = HookedModel(tiny_gemma("gemma2"))
    assert g2.adapter.attn_softcap(0) == 0.5 and g2.adapter.logit_softcap == 3.0
    assert [g2.adapter.sliding_window(layer) for layer in range(2)] == [WINDOW, None]


def test_softcap_changes_the_pattern(ids: Tensor) -> None:
    """Gemma 2's pattern is the capped one: the same model without the cap has a different pattern."""
    capped = HookedModel(tiny_gemma("gemma2"))
    plain = HookedModel(tiny_gemma("gemma2", attn_logit_softcapping=None))
    name = "blocks.1.attn.hook_pattern"
    a, b = capped.run_with_cache(ids, names=[name])[1][name], plain.run_with_cache(ids, names=[name])[1][name]
    assert (a - b).abs().max() > 1e-2


def test_replaced_pattern_is_used_as_a_hand_computation_says(ids: Tensor) -> None:
    model = HookedModel(tiny_gemma())
    base = model(ids)
    assert_pattern_replacement_is_used(model, ids, base)  # layer 0 is local: the replacement still wins

    def previous_token(t: Tensor, *, hook: object) -> Tensor:
        out = torch.zeros_like(t)
        q = torch.arange(t.shape[-1])
        out[..., q, (q - 1).clamp(min=0)] = 1
        return out

    layer, p = 1, "blocks.1."
    logits, cache = model.run_with_cache(ids, names=[p + "hook_resid_pre", p + "attn.hook_z", p + "hook_attn_out"],
                                         hooks=[(p + "attn.hook_pattern", previous_token)])
    v = torch.einsum("bpd,hde->bphe", model.adapter.ln1(layer)(cache[p + "hook_resid_pre"]), model.W_V[layer])
    z = torch.cat([v[:, :1], v[:, :-1]], dim=1)  # each position reads the previous one's value
    torch.testing.assert_close(cache[p + "attn.hook_z"], z)
    out = model.adapter.attn_post_norm(layer)(torch.einsum("bphe,hed->bpd", z, model.W_O[layer]) + model.b_O[layer])
    torch.testing.assert_close(cache[p + "hook_attn_out"], out)
    assert (logits - base).abs().max() > 1e-3


# --- what each hook point holds ------------------------------------------------------------------
def test_hook_points_hold_what_the_docstring_says(ids: Tensor) -> None:
    from transformers.activations import ACT2FN

    hf = tiny_gemma()
    model = HookedModel(hf)
    logits, cache = model.run_with_cache(ids)
    a = model.adapter
    assert torch.equal(cache["hook_embed"], model.W_E[ids])
    assert torch.equal(cache["hook_embed"], cache["blocks.0.hook_resid_pre"])
    gelu = ACT2FN["gelu_pytorch_tanh"]
    for layer in range(model.cfg.n_layers):
        p, block = f"blocks.{layer}.", hf.model.layers[layer]
        z = cache[p + "attn.hook_z"]
        assert z.shape == (2, ids.shape[1], HEADS, D_HEAD)
        before_norm = torch.einsum("bphe,hed->bpd", z, model.W_O[layer]) + model.b_O[layer]
        torch.testing.assert_close(block.post_attention_layernorm(before_norm), cache[p + "hook_attn_out"])
        assert (before_norm - cache[p + "hook_attn_out"]).abs().max() > 1e-2  # the post-norm is not a no-op
        ln2 = cache[p + "ln2.hook_normalized"]
        assert torch.equal(ln2, block.pre_feedforward_layernorm(cache[p + "hook_resid_mid"]))
        torch.testing.assert_close(cache[p + "mlp.hook_pre"], ln2 @ block.mlp.gate_proj.weight.T)
        torch.testing.assert_close(cache[p + "mlp.hook_post"],
                                   gelu(cache[p + "mlp.hook_pre"]) * (ln2 @ model.W_in[layer] + model.b_in[layer]))
        out = cache[p + "mlp.hook_post"] @ model.W_out[layer] + model.b_out[layer]
        torch.testing.assert_close(a.mlp_post_norm(layer)(out), cache[p + "hook_mlp_out"])
    torch.testing.assert_close(logits, cache["ln_final.hook_normalized"] @ model.W_U)


def test_final_logit_softcap_is_applied_after_W_U(ids: Tensor) -> None:
    model = HookedModel(tiny_gemma("gemma2"))
    logits, cache = model.run_with_cache(ids, names=["ln_final.hook_normalized"])
    c = model.adapter.logit_softcap
    torch.testing.assert_close(logits, c * torch.tanh(cache["ln_final.hook_normalized"] @ model.W_U / c))


@pytest.mark.parametrize("n_kv", [1, 2])
def test_weight_views_shapes_and_qkv(n_kv: int, ids: Tensor) -> None:
    hf = tiny_gemma(n_kv=n_kv)
    model = HookedModel(hf)
    L, emb = len(LAYER_TYPES), hf.model.embed_tokens
    assert model.W_Q.shape == model.W_K.shape == model.W_V.shape == (L, HEADS, D, D_HEAD)
    assert model.W_O.shape == (L, HEADS, D_HEAD, D) and model.b_O.shape == (L, D) and not model.b_O.any()
    assert model.W_in.shape == (L, D, 48) and model.W_out.shape == (L, 48, D)
    assert model.W_E.shape == (VOCAB, D) and model.W_U.shape == (D, VOCAB)
    torch.testing.assert_close(model.W_E, emb.weight * D ** 0.5)
    assert torch.equal(model.W_U, hf.lm_head.weight.T) and hf.lm_head.weight is emb.weight  # tied, unscaled
    group = HEADS // n_kv
    assert torch.equal(model.W_K[:, 0], model.W_K[:, group - 1])  # query heads sharing a KV head
    assert torch.equal(model.W_V[:, 0], model.W_V[:, group - 1])

    seen: dict[str, Tensor] = {}
    attn = hf.model.layers[1].self_attn
    handles = [getattr(attn, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
               for n in ("q_proj", "k_proj", "v_proj", "q_norm")]
    try:
        _, cache = model.run_with_cache(ids, names=["blocks.1.hook_resid_pre"])
    finally:
        for h in handles:
            h.remove()
    x = model.adapter.ln1(1)(cache["blocks.1.hook_resid_pre"])
    q = torch.einsum("bpd,hde->bphe", x, model.W_Q[1])
    torch.testing.assert_close(q.flatten(2), seen["q_proj"])
    torch.testing.assert_close(attn.q_norm(q.transpose(1, 2)), seen["q_norm"])  # q_norm acts on W_Q's output
    for name, W in (("k_proj", model.W_K[1]), ("v_proj", model.W_V[1])):
        kv = torch.einsum("bpd,hde->bphe", x, W)[:, :, ::group]  # one per KV head
        torch.testing.assert_close(kv.flatten(2), seen[name])


def test_names_gemma_lacks_are_refused(ids: Tensor) -> None:
    model = HookedModel(tiny_gemma())
    for name, closest in (("hook_pos_embed", "hook_embed"), ("blocks.0.attn.hook_q", "blocks.0.attn.hook_z, "),
                          ("blocks.3.hook_resid_pre", "blocks.2.hook_resid_pre, "),  # 3 layers: 0..2
                          ("blocks.0.ln1.hook_scale", "blocks.0.ln2.hook_normalized, ")):
        with pytest.raises(InputError, match="^" + re.escape(f"hook name '{name}': not a hook point of this model; "
                                                             f"closest: {closest}")):
            model.run_with_cache(ids, names=[name])


def test_every_family_names_its_attention_input_norm_and_post_norms() -> None:
    for family, attr in (("gpt2", "ln_1"), ("gpt_neox", "input_layernorm"), ("llama", "input_layernorm")):
        model = HookedModel(tiny_hf_model(family))
        assert model.adapter.ln1(1) is getattr(model.adapter.blocks()[1], attr)
        assert model.adapter.attn_post_norm(1) is None and model.adapter.mlp_post_norm(1) is None
        assert model.adapter.attn_scale(1) == model.cfg.d_head ** -0.5 and model.adapter.logit_softcap is None
    a = HookedModel(tiny_gemma()).adapter
    b = a.blocks()[1]
    assert a.ln1(1) is b.input_layernorm and a.attn_post_norm(1) is b.post_attention_layernorm
    assert a.ln2(1) is b.pre_feedforward_layernorm and a.mlp_post_norm(1) is b.post_feedforward_layernorm



def test_parity_report_reconstructs_through_the_post_norms(ids: Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    """check_parity's z -> attn_out and post -> mlp_out identities hold on Gemma only through its post-norms."""
    from lmscope.model.parity import check_parity

    model = HookedModel(tiny_gemma())
    report = check_parity(model, ids)
    assert report.ok(tol=1e-5) and report.n_hook_points == len(model.hook_names)
    monkeypatch.setattr(model.adapter, "mlp_post_norm", lambda layer: None)  # forget the post-feedforward norm
    assert check_parity(model, ids).post_to_mlp_out > 0.1


def test_llama_layout_families_report_their_sliding_windows() -> None:
    """Mistral slides on every layer, Qwen2 only on the layers its layer_types mark, Llama never."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    shape = dict(vocab_size=32, hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=3)
    llama = HookedModel(LlamaForCausalLM(LlamaConfig(**shape)))
    mistral = HookedModel(MistralForCausalLM(MistralConfig(**shape, sliding_window=5)))
    qwen = HookedModel(Qwen2ForCausalLM(Qwen2Config(**shape, use_sliding_window=True, sliding_window=6,
                                                    max_window_layers=1)))
    assert [llama.adapter.sliding_window(i) for i in range(3)] == [None, None, None]
    assert [mistral.adapter.sliding_window(i) for i in range(3)] == [5, 5, 5]
    assert [qwen.adapter.sliding_window(i) for i in range(3)] == [None, 6, 6]
    assert [qwen.hf.model.layers[i].self_attn.sliding_window for i in range(3)] == [None, 6, 6]  # the model agrees
