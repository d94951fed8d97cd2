"""Final-norm folding: weight-based head scores read W_U through the final norm, so a reparametrisation that
leaves every logit unchanged leaves every score unchanged too; the raw W_U (`fold_ln=False`) does not.

The reparametrisation: multiply the final norm's gain by g (per dimension, positive) and divide W_U's rows
by g. On an untied model that changes no logit. For LayerNorm (which centres) a second one: add
`(1 / gain) v^T` to W_U, which the centred normalised input never sees.
"""

from __future__ import annotations

import pytest
import torch

from heads.tiny_tokenizers import tiny_llama
from lmscope import HookedModel
from lmscope.heads import copying_score, succession_scores, unembedding
from lmscope.heads.ov import ov_logits
from tiny_models import tiny_hooked_with_tokenizer


def _untied(family: str) -> HookedModel:
    """An untied tiny model whose final norm has a random positive gain (so folding is not the identity)."""
    base = tiny_hooked_with_tokenizer(tie_word_embeddings=False)
    model = base if family == "gpt2" else HookedModel(tiny_llama(len(base.tokenizer), tie=False), base.tokenizer)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        norm = model.adapter.ln_final()
        norm.weight.copy_(torch.exp(0.5 * torch.randn(model.cfg.d_model, generator=g)))
    return model


def _scores(model: HookedModel, fold: bool) -> dict[str, torch.Tensor]:
    result = succession_scores(model, mode="raw", fold_ln=fold)
    assert result.baseline is not None
    ids = torch.arange(0, model.cfg.d_vocab, 7)
    return {"scores": result.scores, "pooled": result.scores_pooled, "baseline": result.baseline,  # type: ignore[dict-item]
            **{f"task:{t}": s for t, s in result.per_task.items()},
            "copying": copying_score(model, n_tokens=256, fold_ln=fold),
            "ov": ov_logits(model, ids[:40], ids, fold_ln=fold)}


def _logits(model: HookedModel) -> torch.Tensor:
    ids = torch.randint(3, model.cfg.d_vocab, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.hf(input_ids=ids).logits


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key == "ov":
            assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-5), key
        else:
            assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_gain_moved_into_W_U_changes_no_folded_score(family: str) -> None:
    model = _untied(family)
    before_logits, folded, raw = _logits(model), _scores(model, True), _scores(model, False)
    assert folded["scores"].max() > 0 and folded["baseline"].max() > 0  # not vacuous: some pairs succeed
    g = torch.exp(1.5 * torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        norm = model.adapter.ln_final()
        norm.weight.mul_(g)
        if getattr(norm, "bias", None) is not None:
            norm.bias.mul_(g)
        model.hf.lm_head.weight.div_(g[None, :])  # [vocab, d_model]: W_U's rows are its columns
    assert torch.allclose(_logits(model), before_logits, rtol=1e-4, atol=1e-5)  # the same model
    _assert_same(_scores(model, True), folded)
    moved = _scores(model, False)
    assert not torch.allclose(moved["ov"], raw["ov"], rtol=1e-2)
    assert not torch.equal(moved["baseline"], raw["baseline"]) or not torch.equal(moved["copying"], raw["copying"])
    assert not torch.equal(moved["scores"], raw["scores"])


def test_layernorm_folding_centres_W_U() -> None:
    """GPT-2's final LayerNorm centres its input, so W_U + (1 / gain) v^T gives the same logits; the folded
    unembedding is the same matrix and every score with it."""
    model = _untied("gpt2")
    before_logits, folded = _logits(model), _scores(model, True)
    W_U_before = unembedding(model)
    assert torch.allclose(W_U_before.mean(0), torch.zeros(model.cfg.d_vocab), atol=1e-6)  # columns centred
    v = torch.randn(model.cfg.d_vocab, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        gain = model.adapter.ln_final().weight.detach().clone()
        model.hf.lm_head.weight.add_(v[:, None] * (1 / gain)[None, :])
    assert torch.allclose(_logits(model), before_logits, rtol=1e-4, atol=1e-4)
    assert torch.allclose(unembedding(model), W_U_before, atol=1e-5)
    _assert_same(_scores(model, True), folded)


def test_unembedding_without_folding_is_W_U() -> None:
    model = _untied("llama")
    assert torch.equal(unembedding(model, fold_ln=False), model.W_U.float())
    ids = torch.tensor([4, 9, 2])
    gain = model.adapter.ln_final().weight.detach()
    assert torch.allclose(unembedding(model, ids), gain[:, None] * model.W_U[:, ids])  # RMSNorm: gain only
