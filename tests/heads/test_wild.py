"""Heads in the wild: the category rules, the frozen final norm, and the direct-effect ablation itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from heads.tiny_tokenizers import tiny_gemma3, tiny_llama
from lmscope import HookedModel
from lmscope.errors import InputError
from lmscope.heads.wild import (
    CATEGORIES,
    WildResult,
    _mean_z,
    batch_losses,
    classify,
    frozen_norm_map,
    heads_in_the_wild,
)
from lmscope.model.inputs import TokenBatch
from tiny_models import tiny_hf_model, tiny_hooked_with_tokenizer


@pytest.mark.parametrize(("context", "target", "expected"), [
    (["the", " day", " after", " Monday"], " Tuesday", "succession"),
    (["she", " wrote", " 7", " and"], " 8", "succession"),
    (["from", " 17", "32", " to", " 17"], "89", "greater_than"),
    (["from", " 17", "89", " to", " 17"], "32", "other"),
    (["the", " cat", " saw", " the"], " cat", "copying"),
    (["the", " Royal", " Navy", " ("], "R", "acronym"),
    (["the", " cat"], " sat", "other"),
])
def test_classify(context: list[str], target: str, expected: str) -> None:
    assert classify(context, target) == expected


def test_frozen_norm_map_is_the_jacobian_of_layernorm() -> None:
    torch.manual_seed(0)
    norm = nn.LayerNorm(8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    x, c = torch.randn(3, 8), torch.randn(3, 2, 8)
    # a LayerNorm's scale depends on x only through |x - mean(x)|, so for directions c orthogonal to x's centred
    # vector the derivative of the scale is zero and the Jacobian-vector product IS the frozen-scale map
    centred_x = x - x.mean(-1, keepdim=True)
    unit = centred_x / centred_x.norm(dim=-1, keepdim=True)
    c = c - (c * unit[:, None]).sum(-1, keepdim=True) * unit[:, None]  # orthogonal to centred x, per position
    mapped = frozen_norm_map(norm, x, c)
    assert mapped.shape == (3, 2, 8)
    for i in range(3):
        for j in range(2):
            _, jvp = torch.autograd.functional.jvp(lambda v: norm(v), x[i], c[i, j])
            torch.testing.assert_close(mapped[i, j], jvp, atol=1e-5, rtol=1e-5)
    # along x itself the map is linear while the norm is not: frozen_norm_map(x) is norm(x) without its bias
    torch.testing.assert_close(frozen_norm_map(norm, x, x[:, None])[:, 0] + norm.bias, norm(x).detach())


def _plain_frozen_map(norm: nn.Module, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The norm at `x [d]` with its scale frozen, applied to `c [k, d]`, from the module's own attributes (not
    lmscope.model.norms): LayerNorm centres and divides by sqrt(var + eps); Llama's RMSNorm divides by
    sqrt(mean(x^2) + eps); Gemma's multiplies by (1 + weight). Checked against the module's forward below."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    if isinstance(norm, nn.LayerNorm):
        scale = (x.var(-1, unbiased=False) + norm.eps).sqrt()
        return norm.weight * (c - c.mean(-1, keepdim=True)) / scale
    eps = norm.eps if isinstance(norm, Gemma3RMSNorm) else norm.variance_epsilon
    gain = 1 + norm.weight if isinstance(norm, Gemma3RMSNorm) else norm.weight
    return gain.float() * c / (x.pow(2).mean(-1) + eps).sqrt()


def _checked_frozen_map(norm: nn.Module, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """`_plain_frozen_map`, after checking that at c = x it gives the module's own output (minus any bias)."""
    bias = getattr(norm, "bias", None)
    own = norm(x[None]).detach().float()[0] - (0 if bias is None else bias.detach())
    torch.testing.assert_close(_plain_frozen_map(norm, x, x[None]).detach()[0], own, atol=1e-4, rtol=1e-4)
    return _plain_frozen_map(norm, x, c).detach()


def test_direct_effect_ablation_blames_the_head_that_writes_the_answer() -> None:
    """Zero every head's output but head 1.1's, which writes W_U[next token] exactly where it is needed:
    then for every position whose next token head 1.1 boosts, ablating 1.1 hurts most."""
    model: HookedModel = tiny_hooked_with_tokenizer()
    with torch.no_grad():
        for layer in range(model.cfg.n_layers):
            model.adapter.attn_out_proj(layer).weight.zero_()
            model.adapter.attn_out_proj(layer).bias.zero_()
        dh = model.cfg.d_head
        g = torch.Generator().manual_seed(0)
        model.adapter.attn_out_proj(1).weight[dh:2 * dh] = torch.randn(dh, model.cfg.d_model, generator=g) * 3
    texts = ["the list reads 3 4 5 6 .", "after Monday comes Tuesday ."]
    result = heads_in_the_wild(model, texts)
    n = sum(len(model.to_str_tokens(t)) - 1 for t in texts)
    assert result.n_tokens == n and int(result.counts.sum()) == n
    # the other heads have no direct effect at all, so every token's most important head is 1.1 or a tie at 0
    # (argmax picks the first); 1.1 must win wherever its effect is positive
    nonzero = result.counts.sum(-1).nonzero().tolist()
    assert [1, 1] in nonzero and all(h in ([0, 0], [1, 1]) for h in nonzero)
    assert result.to_dict()["categories"] == list(CATEGORIES)
    summary = result.head_summary(1, 1)
    assert summary["tokens"] > 0 and abs(sum(summary["shares"].values()) - 1) < 1e-6


def test_bad_texts() -> None:
    model = tiny_hooked_with_tokenizer()
    with pytest.raises(InputError, match="texts: expected a non-empty list of strings"):
        heads_in_the_wild(model, [])


def _reference_losses(model: HookedModel, batch: TokenBatch, z_mean: torch.Tensor) -> torch.Tensor:
    """The definition, one position and one head at a time: the head's output difference `(z - z_mean) @ W_O`,
    through the post-attention norm where there is one and the final norm (each frozen at the position's
    scale, by `_checked_frozen_map`, not the code under test), then `@ W_U` over the whole vocabulary; the next
    token's loss change."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]
    logits, cache = model.run_with_cache(batch, names=names)
    W_O, W_U = model.W_O.float(), model.W_U.float()
    rows = []
    for b in range(batch.input_ids.shape[0]):
        for p in range(int(batch.attention_mask[b].sum()) - 1):
            base, y = logits[b, p].float(), int(batch.input_ids[b, p + 1])
            row = torch.empty(L, H)
            for layer in range(L):
                z = cache[names[layer]][b, p].float()  # [H, dh]
                post = model.adapter.attn_post_norm(layer)
                for h in range(H):
                    delta = ((z[h] - z_mean[layer, h]) @ W_O[layer, h])[None]  # [1, d]
                    if post is not None:
                        delta = _checked_frozen_map(post, torch.einsum("he,hed->d", z, W_O[layer]), delta)
                    d_logits = (_checked_frozen_map(model.adapter.ln_final(), cache[names[-1]][b, p].float(), delta)
                                @ W_U)[0]
                    ablated = base - d_logits
                    row[layer, h] = (torch.logsumexp(ablated, -1) - torch.logsumexp(base, -1)
                                     - (ablated[y] - base[y]))
            rows.append(row)
    return torch.stack(rows)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3"])
def test_batched_losses_equal_the_per_head_definition(family: str) -> None:
    """The factored, chunked computation equals the definition on random models (LayerNorm, RMSNorm, and
    Gemma's post-attention norm), with a padded row; a small `max_elements` forces many chunks. The 20
    positions take the factored path on GPT-2 and Llama (d_head 8 of 32), the plain one on Gemma (16 of 32)."""
    hf = {"gpt2": lambda: tiny_hf_model("gpt2"), "llama": lambda: tiny_hf_model("llama"), "gemma3": tiny_gemma3}
    model = HookedModel(hf[family]())
    ids = torch.randint(3, 60, (3, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    batch = TokenBatch(ids, mask)
    z_mean = _mean_z(model, [batch], None).float()
    got_mask, got = batch_losses(model, batch, z_mean, max_elements=500)
    assert got_mask.sum().item() == 8 + 4 + 8
    assert torch.allclose(got, _reference_losses(model, batch, z_mean), rtol=1e-4, atol=1e-5)
    # three positions: too few for the [head, d_head, vocab] factor to pay, so (dz W_O) W_U is taken instead
    short = TokenBatch(ids[:1, :4], mask[:1, :4])
    assert 3 * (model.cfg.d_model - model.cfg.d_head) < model.cfg.d_head * model.cfg.d_model
    assert torch.allclose(batch_losses(model, short, z_mean)[1], _reference_losses(model, short, z_mean),
                          rtol=1e-4, atol=1e-5)


def test_category_tops_and_corpus_record() -> None:
    counts = torch.zeros(2, 3, len(CATEGORIES))
    counts[1, 2, 0], counts[0, 1, 0], counts[0, 0, 2] = 3, 1, 5  # succession: 1.2 wins 3 of 4; copying: 0.0
    result = WildResult(counts, 9, corpus={"source": "x.txt"})
    tops = {t["category"]: t for t in result.category_tops()}
    assert tops["succession"] == {"category": "succession", "n_tokens": 4, "layer": 1, "head": 2, "tokens": 3,
                                  "share": 0.75}
    assert tops["copying"]["layer"] == 0 and tops["copying"]["head"] == 0 and tops["copying"]["share"] == 1.0
    assert tops["other"] == {"category": "other", "n_tokens": 0, "layer": None, "head": None, "tokens": 0,
                             "share": 0.0}
    d = result.to_dict()
    assert d["category_tops"] == result.category_tops() and d["corpus"] == {"source": "x.txt"}


def test_wild_on_llama_raises_no_transformers_warning(recwarn: pytest.WarningsRecorder) -> None:
    """Issue 13 item 9: heads in the wild runs plain forward passes (`use_cache=False`), so nothing of
    transformers' deprecated cache path is touched."""
    import warnings

    base = tiny_hooked_with_tokenizer()
    model = HookedModel(tiny_llama(len(base.tokenizer)), base.tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = heads_in_the_wild(model, ["after Monday comes Tuesday .", "the list reads 3 4 5 6 ."])
    assert result.n_tokens > 0


WILD_TEXTS = ["the list reads 3 4 5 6 .", "after Monday comes Tuesday .", "the cat saw the cat .",
              "from 1732 to 1789 the list reads", "Monday", "the Royal Navy ( R"]


def _random_wild_model(family: str) -> HookedModel:
    base = tiny_hooked_with_tokenizer()
    if family == "gpt2":
        return base
    return HookedModel((tiny_llama if family == "llama" else tiny_gemma3)(len(base.tokenizer)), base.tokenizer)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3"])
def test_batching_and_memory_budget_change_nothing(family: str) -> None:
    """One text per batch, the default batches, a budget that fits a single text's logits, and tiny vocabulary
    slices all give the same counts and examples (the examples' loss increases to float tolerance)."""
    model = _random_wild_model(family)
    ref = heads_in_the_wild(model, WILD_TEXTS, batch_size=1)
    longest = max(len(model.to_str_tokens(t)) for t in WILD_TEXTS)
    for kwargs in ({}, {"max_bytes": 4 * model.cfg.d_vocab * longest}, {"max_elements": 300, "batch_size": 4}):
        got = heads_in_the_wild(model, WILD_TEXTS, **kwargs)  # type: ignore[arg-type]
        assert torch.equal(got.counts, ref.counts) and got.n_tokens == ref.n_tokens
        assert got.examples.keys() == ref.examples.keys()
        for key, examples in got.examples.items():
            assert [e["next"] for e in examples] == [e["next"] for e in ref.examples[key]]
            assert [e["loss_increase"] for e in examples] == pytest.approx(
                [e["loss_increase"] for e in ref.examples[key]], rel=1e-4, abs=1e-6)
    assert len({int(c) for c in ref.counts.sum(-1).flatten()}) > 1  # not every head ties


def test_batches_follow_the_memory_budget() -> None:
    """Texts per batch: at most batch_size, and no more padded positions than the budget's log-probabilities
    hold (a text longer than that still gets a batch of its own)."""
    from lmscope.heads.wild import _batches

    model = tiny_hooked_with_tokenizer()
    lengths = [len(model.to_str_tokens(t)) for t in WILD_TEXTS]
    per_position = 4 * model.cfg.d_vocab
    assert [len(b.input_ids) for b in _batches(model, WILD_TEXTS, 16, 10**9)] == [6]
    assert [len(b.input_ids) for b in _batches(model, WILD_TEXTS, 4, 10**9)] == [4, 2]
    assert [len(b.input_ids) for b in _batches(model, WILD_TEXTS, 16, 1)] == [1] * 6
    budget = per_position * 2 * max(lengths[:2])  # the first two texts fit, a third would not
    assert 3 * max(lengths[:3]) * per_position > budget
    assert len(_batches(model, WILD_TEXTS, 16, budget)[0].input_ids) == 2


def test_only_positions_with_a_next_token_are_unembedded() -> None:
    model = tiny_hooked_with_tokenizer()
    seen: list[tuple[int, ...]] = []
    handle = model.adapter.unembed().register_forward_hook(lambda m, a, out: seen.append(tuple(out.shape)))
    try:
        batch = model.to_tokens(WILD_TEXTS[:3])
        mask, _ = batch_losses(model, batch, _mean_z(model, [batch], None).float())
    finally:
        handle.remove()
    assert seen == [(1, int(mask.sum()), model.cfg.d_vocab)]
    assert int(mask.sum()) == int(batch.attention_mask.sum()) - 3


def test_bad_budgets_are_refused() -> None:
    model = tiny_hooked_with_tokenizer()
    with pytest.raises(InputError, match="max_bytes/max_elements: expected positive numbers, got 0 and 8388608"):
        heads_in_the_wild(model, WILD_TEXTS, max_bytes=0)


def test_cli_chunk_mb(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from cli_runner import run

    model = tiny_hooked_with_tokenizer()
    model.hf.save_pretrained(tmp_path / "m")
    model.tokenizer.save_pretrained(tmp_path / "m")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(WILD_TEXTS) + "\n")
    args = ["heads", "wild", str(tmp_path / "m"), "--corpus", str(corpus), "--json"]
    code, default, err = run(capsys, *args)
    assert code == 0, err
    code, small, err = run(capsys, *args, "--chunk-mb", "1", "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert json.loads(small)["counts"] == json.loads(default)["counts"]
    assert (tmp_path / "o" / "result.json").exists()
    code, _, err = run(capsys, *args, "--chunk-mb", "0")
    assert code == 2 and "--chunk-mb: expected an integer in 1..2147483647, got 0" in err
    code, _, err = run(capsys, *args, "--out", str(tmp_path / "o"))
    assert code == 2 and "already exists" in err and "mean head outputs" not in err  # refused before any work
