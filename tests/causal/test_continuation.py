"""Greedy-continuation outcomes under a patch, against step-by-step generation with a hook."""

from __future__ import annotations

import pytest
import torch

from lmscope.causal import Component, patch_sweep, standard_components
from lmscope.causal.continuation import Continuation, continuation_classifier, continuation_lexicon_rate
from lmscope.causal.scorers import greedy_lexicon_rate
from lmscope.errors import InputError
from lmscope.model.units import Unit
from tiny_models import tiny_hooked_with_tokenizer

BASE = ["the senator voted", "the soup was very hot today", "a storm hit"]
SOURCE = ["the chef baked the bread", "rain", "the stupid player scored twice"]
N = 5


def _fingerprint(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """A score that changes when a generated token does (exact in float32)."""
    return (tokens.float() * torch.arange(1, tokens.shape[1] + 1)).sum(1)


def _generate(model, ids: torch.Tensor, hooks: list) -> list[int]:  # type: ignore[no-untyped-def]
    tokens = []
    for _ in range(N):
        nxt = model.run_with_hooks(ids, hooks=hooks)[0, -1].argmax()
        tokens.append(int(nxt))
        ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return tokens


def test_patched_continuations_match_generation_with_the_patch_held() -> None:
    model = tiny_hooked_with_tokenizer(400)
    comps = standard_components(2, 4, "heads,mlp,resid")
    result = patch_sweep(model, BASE, SOURCE, comps, Continuation(N, _fingerprint))
    patched = result.effects + result.y_base[:, None]
    assert patched.unique().numel() > 3  # the patches change what is generated
    for i in range(3):
        ids = model.to_tokens(BASE[i]).input_ids
        assert result.y_base[i] == _fingerprint(torch.tensor([_generate(model, ids, [])]), torch.arange(1))[0]
        _, cache = model.run_with_cache(SOURCE[i])
        pos = ids.shape[1] - 1
        for k, label in enumerate(result.components):
            unit = Unit.parse(label)

            def hold(t: torch.Tensor, *, hook: object, unit: Unit = unit, cache: dict = cache,
                     pos: int = pos) -> torch.Tensor:
                t = t.clone()  # the base's last prompt token takes the source's last-token value, at every step
                src = cache[unit.hook][:, -1]
                if unit.kind == "head":
                    t[:, pos, unit.index] = src[:, unit.index]
                else:
                    t[:, pos] = src
                return t

            expected = _fingerprint(torch.tensor([_generate(model, ids, [(unit.hook, hold)])]), torch.arange(1))
            assert patched[i, k] == expected[0], (i, label)


def test_lexicon_rate_and_classifier_continuations(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from transformers import GPT2Config, GPT2ForSequenceClassification

    model = tiny_hooked_with_tokenizer(400)
    words = ["the", "a", "senator", "soup"]
    rate = continuation_lexicon_rate(model, words, n_tokens=N)
    result = patch_sweep(model, BASE, SOURCE, ["blocks.1.hook_mlp_out@-1"], rate)
    torch.testing.assert_close(result.y_base, greedy_lexicon_rate(model, BASE, words, n_tokens=N))
    torch.manual_seed(0)
    clf = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(model.tokenizer),
                                                   num_labels=2, pad_token_id=0)).eval()
    clf.save_pretrained(tmp_path / "clf")
    model.tokenizer.save_pretrained(tmp_path / "clf")
    classifier = continuation_classifier(model, str(tmp_path / "clf"), n_tokens=3)
    scored = patch_sweep(model, BASE, SOURCE, ["blocks.0.attn:1@-1"], classifier)
    for i, text in enumerate(BASE):  # by hand: 3 greedy tokens, decoded, then P(label 1) from the classifier
        ids = model.to_tokens(text).input_ids
        with torch.no_grad():
            for _ in range(3):
                ids = torch.cat([ids, model(ids)[0, -1].argmax().view(1, 1)], dim=1)
            continuation = model.tokenizer.decode(ids[0, -3:].tolist())
            enc = model.tokenizer(continuation, return_tensors="pt")
            expected = clf(**enc).logits.softmax(-1)[0, 1]
        assert float(scored.y_base[i]) == pytest.approx(float(expected), rel=1e-5), continuation


def test_continuations_need_last_token_components() -> None:
    model = tiny_hooked_with_tokenizer(400)
    with pytest.raises(InputError, match=r"^outcome: a greedy continuation needs a HookedModel, skip_layers=True and "
                                         r"every component at the last token \(@-1\)$"):
        patch_sweep(model, BASE, SOURCE, [Component.of("blocks.1.hook_mlp_out@1")], Continuation(2, _fingerprint))
    with pytest.raises(InputError, match=r"^continuation tokens: expected at least 1, got 0$"):
        Continuation(0, _fingerprint)
