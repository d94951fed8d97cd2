"""Input-invariant views read weights through the norms in front of them (gains folded in, LayerNorm readers
centred): a reparametrisation that moves each norm's gain into the weights after it leaves the logits and, folded,
every view unchanged, while the raw products move."""

from __future__ import annotations

import copy

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from lmscope import HookedModel
from lmscope.circuits import connection, connections, de_embedding_scores, logit_scores, ov_de_embedding
from lmscope.circuits.analysis import trace_circuit
from lmscope.circuits.targets import Target
from lmscope.dictionary import DictConfig, Dictionary
from lmscope.dictionary.features import de_embedding
from tiny_models import tiny_hf_model


def _tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    """Whitespace words `t0`..`t{vocab-1}`, one token each (what the views decode their top tokens with)."""
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", pad_token="t0")


def _transcoders(model: HookedModel) -> dict[int, Dictionary]:
    out = {}
    for layer in range(model.cfg.n_layers):
        cfg = DictConfig(kind="transcoder", d_in=model.cfg.d_model, d_sae=24,
                         hook_name=f"blocks.{layer}.ln2.hook_normalized", hook_name_out=f"blocks.{layer}.hook_mlp_out")
        tc = Dictionary(cfg, generator=torch.Generator().manual_seed(10 + layer))
        with torch.no_grad():
            tc.b_dec_in.normal_(generator=torch.Generator().manual_seed(20 + layer))
        out[layer] = tc
    return out


def _norms_and_readers(model: HookedModel, layer: int) -> list[tuple[torch.nn.Module, list[torch.Tensor]]]:
    """Each norm of block `layer` with the weights that read its output, as `[out, d_model]` views."""
    block = model.adapter.blocks()[layer]
    if model.cfg.family == "gpt2":  # Conv1D weights are [d_model, out]: transpose to read columns as rows
        return [(block.ln_1, [block.attn.c_attn.weight.T]), (block.ln_2, [block.mlp.c_fc.weight.T])]
    attn, mlp = block.self_attn, block.mlp
    return [(block.input_layernorm, [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]),
            (block.post_attention_layernorm, [mlp.gate_proj.weight, mlp.up_proj.weight])]


def _move_gains(model: HookedModel, tcs: dict[int, Dictionary], seed: int = 3) -> tuple[HookedModel, dict]:
    """A copy where every norm's weight (and bias) is multiplied by a random positive g and the weights that read
    its output (the transcoder's encoder included) are divided by g: the same function, other parameters."""
    model, tcs = copy.deepcopy(model), copy.deepcopy(tcs)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        pairs = [pair for layer in range(model.cfg.n_layers) for pair in _norms_and_readers(model, layer)]
        pairs.append((model.adapter.ln_final(), [model.adapter.unembed().weight]))
        for i, (norm, readers) in enumerate(pairs):
            g = 0.5 + 1.5 * torch.rand(model.cfg.d_model, generator=gen)
            norm.weight.mul_(g)
            if getattr(norm, "bias", None) is not None:
                norm.bias.mul_(g)
            for w in readers:
                w.div_(g)
            layer = i // 2
            if i % 2 == 1 and i < 2 * model.cfg.n_layers:  # the MLP input norm: its transcoder reads it too
                tcs[layer].W_enc.div_(g[:, None])
                tcs[layer].b_dec_in.mul_(g)
    return model, tcs


@pytest.mark.parametrize("family", ["gpt2", "llama"])  # LayerNorm (centred readers) and RMSNorm
def test_moving_norm_gains_changes_no_folded_view(family: str) -> None:
    model = HookedModel(tiny_hf_model(family, tie_word_embeddings=False), _tokenizer(61))
    tcs = _transcoders(model)
    moved, moved_tcs = _move_gains(model, tcs)
    ids = torch.randint(1, 61, (2, 9), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(moved(ids), model(ids), atol=2e-5, rtol=0)  # logit-identical
    name = "blocks.1.ln2.hook_normalized"
    x, y = model.run_with_cache(ids, names=[name])[1][name], moved.run_with_cache(ids, names=[name])[1][name]
    torch.testing.assert_close(moved_tcs[1].encode_pre(y), tcs[1].encode_pre(x), atol=2e-5, rtol=0)  # same features

    def views(m: HookedModel, t: dict[int, Dictionary], fold: bool) -> list[torch.Tensor]:
        ov = ov_de_embedding(m, t[1], 5, layer=1, head=2, k=61, fold=fold)
        one = connection(t[0], 3, t[1], 5, model=m, fold=fold)
        top = de_embedding(m, t[1], 5, k=61, fold=fold)  # what `dict features` prints
        return [connections(t[0], t[1], model=m, fold=fold), torch.tensor(one, dtype=torch.float64),
                torch.tensor([v for _, v in top], dtype=torch.float64),
                de_embedding_scores(m, t[1], 5, fold=fold), logit_scores(m, t[0], 3, fold=fold),
                torch.tensor(sorted(v for _, v in ov), dtype=torch.float64)]

    for before, after in zip(views(model, tcs, True), views(moved, moved_tcs, True), strict=True):
        torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    for before, after in zip(views(model, tcs, False), views(moved, moved_tcs, False), strict=True):
        assert (after - before).abs().max() > 0.05 * before.abs().max()  # the raw products see the change


def test_folded_views_by_hand() -> None:
    model = HookedModel(tiny_hf_model("gpt2", tie_word_embeddings=False), _tokenizer(61))
    tcs = _transcoders(model)
    model, tcs = _move_gains(model, tcs, seed=5)  # gains far from 1

    def fold(w: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:  # LayerNorm readers: gain in, then centred
        w = gain.double()[:, None] * w.double()
        return w - w.mean(0, keepdim=True)

    block = model.adapter.blocks()[1]
    enc = fold(tcs[1].W_enc.detach(), block.ln_2.weight.detach())
    torch.testing.assert_close(de_embedding_scores(model, tcs[1], 5), model.W_E.double() @ enc[:, 5])
    W_U = fold(model.W_U, model.adapter.ln_final().weight.detach())
    torch.testing.assert_close(logit_scores(model, tcs[0], 3), tcs[0].W_dec.detach().double()[3] @ W_U)
    torch.testing.assert_close(torch.tensor(connection(tcs[0], 3, tcs[1], 5, model=model), dtype=torch.float64),
                               tcs[0].W_dec.detach().double()[3] @ enc[:, 5])
    W_V = fold(model.W_V[1, 2], block.ln_1.weight.detach())
    scores = model.W_E.double() @ W_V @ model.W_O[1, 2].double() @ enc[:, 5]
    top = ov_de_embedding(model, tcs[1], 5, layer=1, head=2, k=4)
    assert [v for _, v in top] == pytest.approx(scores.topk(4).values.tolist(), rel=1e-9)
    raw = model.W_E.double() @ tcs[1].W_enc.detach().double()[:, 5]
    torch.testing.assert_close(de_embedding_scores(model, tcs[1], 5, fold=False), raw)


def test_the_circuit_result_lists_folded_top_tokens() -> None:
    """The trace's top tokens of a feature, against the folded products written out here for RMSNorm (gain in,
    no centring): logits `W_dec[f] (g_final * W_U)`, de-embedding `W_E (g_ln2 * W_enc[:, f])`."""
    model = HookedModel(tiny_hf_model("llama", tie_word_embeddings=False), _tokenizer(61))
    model, tcs = _move_gains(model, _transcoders(model))
    result = trace_circuit(model, tcs, "t4 t9 t17 t3 t9", Target("logit", (5,), (7,)), n_iters=2, branches=4,
                           threshold=0.0, check=False)
    top = result.features[0]
    layer, f = top["layer"], top["index"]
    tc = tcs[layer]
    g_final = model.adapter.ln_final().weight.detach().double()
    g_ln2 = model.adapter.blocks()[layer].post_attention_layernorm.weight.detach().double()
    logits = tc.W_dec.detach().double()[f] @ (g_final[:, None] * model.W_U.detach().double())
    de_emb = model.W_E.detach().double() @ (g_ln2 * tc.W_enc.detach().double()[:, f])
    assert [t for t, _ in top["logit_tokens"]] == [f"t{int(i)}" for i in logits.topk(6).indices]
    assert [v for _, v in top["logit_tokens"]] == pytest.approx(logits.topk(6).values.tolist(), rel=1e-6)
    assert [t for t, _ in top["de_embedding"]] == [f"t{int(i)}" for i in de_emb.topk(6).indices]
    assert [v for _, v in top["de_embedding"]] == pytest.approx(de_emb.topk(6).values.tolist(), rel=1e-6)
