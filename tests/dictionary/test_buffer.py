"""On-the-fly training data: the shuffling ActivationBuffer over a tiny model, and fitting from it / a store."""

from __future__ import annotations

import pytest
import torch

from lmscope.dictionary import SAE, ActivationBuffer, Transcoder
from lmscope.errors import InputError
from tiny_models import tiny_hooked_with_tokenizer

IN, OUT = "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"
TEXTS = [f"the cat number {i} sat on the mat and saw {i % 7} birds" for i in range(40)]


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return tiny_hooked_with_tokenizer()


def _all_rows(model, names):  # type: ignore[no-untyped-def]
    toks = model.to_tokens(TEXTS)
    _, cache = model.run_with_cache(TEXTS, names=names, return_logits=False)
    mask = toks.attention_mask.bool()
    if model.prepend_bos:
        mask[:, 0] = False
    return [cache[n][mask] for n in names], int(mask.sum())


def test_buffer_serves_every_real_token_shuffled_and_deterministically(model) -> None:  # type: ignore[no-untyped-def]
    (x_all, y_all), n = _all_rows(model, [IN, OUT])
    buf = ActivationBuffer(model, TEXTS, [IN, OUT], buffer_tokens=4 * n, batch_size=8, seed=1)
    buf.configure(batch_size=n // 4)
    it = iter(buf)
    first = [next(it) for _ in range(2)]
    it.close()
    x, y = torch.cat([b[0] for b in first]), torch.cat([b[1] for b in first])
    assert x.shape == (2 * (n // 4), x_all.shape[1]) and y.shape[1] == y_all.shape[1]
    # every served row is a real (non-BOS, non-padding) token row, with its matching target row
    d = torch.cdist(x, x_all, compute_mode="donot_use_mm_for_euclid_dist")
    j = d.argmin(1)
    assert float(d.min(1).values.max()) < 1e-3
    assert torch.allclose(y, y_all[j], atol=1e-5)
    assert not torch.equal(j, torch.arange(len(j)))  # shuffled
    again = next(iter(buf))
    assert torch.equal(again[0], first[0][0])  # same seed, same rows, whatever the thread timing
    assert buf.dims == [x_all.shape[1], y_all.shape[1]]


def test_fit_transcoder_on_the_fly(model) -> None:  # type: ignore[no-untyped-def]
    buf = ActivationBuffer(model, TEXTS, [IN, OUT], buffer_tokens=2048, batch_size=8, seed=0)
    tc = Transcoder(d_sae=64, activation="topk", k=4, batch_size=128, n_steps=30, lr=3e-3).fit(buf)
    assert tc.dictionary_.cfg.hook_name == IN and tc.dictionary_.cfg.hook_name_out == OUT
    assert tc.history_[-1]["mse"] < tc.history_[0]["mse"]
    with pytest.raises(InputError, match=r"ActivationBuffer: a transcoder needs 2 hook names \(input, target\)"):
        Transcoder(d_sae=8, n_steps=1).fit(ActivationBuffer(model, TEXTS, [IN]))
    with pytest.raises(InputError, match="Y: an SAE reconstructs X; pass Y only to a Transcoder"):
        SAE(d_sae=8, n_steps=1).fit(torch.randn(10, 4), torch.randn(10, 4))


def test_reuse_serves_each_computed_row_several_times(model, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (x_all, _), n = _all_rows(model, [IN, OUT])
    buf = ActivationBuffer(model, TEXTS, [IN, OUT], buffer_tokens=3 * n, batch_size=8, seed=0, reuse=3)
    buf.configure(batch_size=3 * n // 2)  # the first pool is one pass over the texts, each row 3 times
    calls = []
    run = model.run_with_cache
    monkeypatch.setattr(model, "run_with_cache", lambda *a, **k: calls.append(1) or run(*a, **k))
    it = iter(buf)
    x, _ = next(it)
    it.close()
    # one pass is 5 batches of 8 texts; at most 4 more wait in the queue and 1 is being computed (3 passes
    # without reuse would take 15)
    assert 5 <= len(calls) <= 10
    d = torch.cdist(x, x_all, compute_mode="donot_use_mm_for_euclid_dist")
    assert float(d.min(1).values.max()) < 1e-3 and x.shape[0] == 3 * n // 2
    # texts share prefixes, so some rows occur several times in the corpus: count by distinct row
    same = torch.cdist(x_all, x_all, compute_mode="donot_use_mm_for_euclid_dist") < 1e-3
    group = same.int().argmax(1)  # the first row equal to each row
    in_corpus = torch.bincount(group, minlength=n)
    served = torch.bincount(group[d.argmin(1)], minlength=n)
    assert bool((served <= 3 * in_corpus).all())  # never more copies than reuse x occurrences
    assert bool(((in_corpus == 1) & (served >= 2)).any())  # and a row that occurs once was served twice
    with pytest.raises(InputError, match=r"^reuse: expected a positive number of times to serve each row, got 0$"):
        ActivationBuffer(model, TEXTS, [IN], reuse=0)
