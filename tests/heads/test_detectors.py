"""Head detectors: a hand-built previous-token head, and the pattern scores on hand-built patterns."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmscope import HookedModel
from lmscope.errors import InputError
from lmscope.heads import (
    HeadScores,
    detect_heads,
    duplicate_token_score,
    induction_score,
    previous_token_score,
)
from lmscope.heads.detectors import repeated_tokens
from tiny_models import tiny_hooked_with_tokenizer

OMEGA = 2 * math.pi / 64  # one positional step on a circle; 41 positions never wrap around


@pytest.fixture(scope="module")
def prev_model() -> HookedModel:
    """Tiny GPT-2 with zero token embeddings and positions on a circle; head 0.1 queries the position
    one step back (W_Q rotates the position by -OMEGA, W_K reads it), so it attends to q - 1."""
    model = tiny_hooked_with_tokenizer()
    d, dh = model.cfg.d_model, model.cfg.d_head
    g = torch.Generator().manual_seed(3)
    basis = torch.linalg.qr(torch.cat([torch.ones(d, 1), torch.randn(d, 2, generator=g)], 1)).Q[:, 1:]
    a, b = basis[:, 0], basis[:, 1]
    pos = torch.arange(model.cfg.n_ctx, dtype=torch.float32)[:, None] * OMEGA
    head, c = 1, 200.0
    with torch.no_grad():
        model.adapter.embed().weight.zero_()
        model.hf.transformer.wpe.weight.copy_(torch.cos(pos) * a + torch.sin(pos) * b)
        attn = model.adapter.attn(0)
        q_cols, k_cols = slice(head * dh, (head + 1) * dh), slice(d + head * dh, d + (head + 1) * dh)
        for cols in (q_cols, k_cols):
            attn.c_attn.weight[:, cols] = 0
            attn.c_attn.bias[cols] = 0
        w = attn.c_attn.weight
        w[:, head * dh] = c * (math.cos(OMEGA) * a + math.sin(OMEGA) * b)  # q_i . k_j = c' cos((i-1-j) OMEGA)
        w[:, head * dh + 1] = c * (-math.sin(OMEGA) * a + math.cos(OMEGA) * b)
        w[:, d + head * dh] = a
        w[:, d + head * dh + 1] = b
    return model


def test_hand_built_previous_token_head_is_found(prev_model: HookedModel) -> None:
    scores = detect_heads(prev_model, seq_len=20, n_seqs=4, n_copy_tokens=64)
    n = (prev_model.cfg.n_layers, prev_model.cfg.n_heads)
    for name in ("previous_token", "duplicate_token", "induction", "copying"):
        s = scores.scores(name)
        assert s.shape == n and s.min() >= 0 and s.max() <= 1 + 1e-6
    prev = scores.previous_token
    assert prev[0, 1].item() > 0.9
    assert prev.argmax().item() == 1  # layer 0, head 1
    assert scores.top_heads("previous_token", k=1)[0]["layer"] == 0


def _patterns(seq_len: int, batch: int = 2) -> torch.Tensor:
    """`[batch, 4, q, k]` on `[BOS] r r`: head 0 previous-token, 1 induction, 2 duplicate, 3 uniform causal."""
    n = 1 + 2 * seq_len
    p = torch.zeros(batch, 4, n, n)
    p[:, 0, 0, 0] = 1
    for q in range(1, n):
        p[:, 0, q, q - 1] = 1
    for h, back in ((1, seq_len - 1), (2, seq_len)):
        for q in range(n):
            p[:, h, q, q - back if q > seq_len else 0] = 1
    p[:, 3] = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]
    return p


def test_pattern_scores_find_their_heads() -> None:
    p = _patterns(6)
    prev, ind, dup = previous_token_score(p), induction_score(p, 6), duplicate_token_score(p, 6)
    assert prev.shape == ind.shape == dup.shape == (4,)
    assert prev.argmax() == 0 and prev[0] == 1.0
    assert ind.argmax() == 1 and ind[1] == 1.0 and ind[0] < 0.2
    assert dup.argmax() == 2 and dup[2] == 1.0 and dup[1] == 0.0
    stacked = torch.stack([p, p.flip(1)])  # [layer, batch, head, q, k]
    assert induction_score(stacked, 6).shape == (2, 4)
    assert induction_score(stacked, 6)[1, 2] == 1.0


def test_repeated_tokens_and_errors(prev_model: HookedModel) -> None:
    # the synthetic tokenizer adds no BOS, so neither do the repeated sequences; asked for, one leads each row
    assert not prev_model.prepend_bos
    ids = repeated_tokens(prev_model, 5, 3, seed=1)
    assert ids.shape == (3, 10) and torch.equal(ids[:, :5], ids[:, 5:])
    with_bos = HookedModel(prev_model.hf, prev_model.tokenizer, prepend_bos=True)
    ids = repeated_tokens(with_bos, 5, 3, seed=1)
    assert ids.shape == (3, 11)
    assert (ids[:, 0] == prev_model.tokenizer.bos_token_id).all()
    assert torch.equal(ids[:, 1:6], ids[:, 6:])
    special = set(prev_model.tokenizer.all_special_ids)
    assert all(len(set(row[1:6].tolist())) == 5 and not set(row[1:].tolist()) & special for row in ids)
    assert torch.equal(ids, repeated_tokens(with_bos, 5, 3, seed=1))
    with pytest.raises(InputError):
        detect_heads(prev_model, seq_len=1)
    with pytest.raises(InputError):
        previous_token_score(torch.zeros(1, 1))


def test_zoo_detectors_save(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    scores = detect_heads(model, seq_len=10, n_seqs=2, n_copy_tokens=128)
    assert isinstance(scores, HeadScores)
    data = json.loads(scores.save(tmp_path).read_text())
    assert data["scores"]["induction"] == scores.induction.tolist()
    assert len(data["scores"]["copying"]) == model.cfg.n_layers
    assert set(data["top_heads"]) == {"previous_token", "duplicate_token", "induction", "copying"}


@pytest.mark.parametrize("fold", [True, False])
def test_copying_score_equals_the_full_vocabulary_argmax(fold: bool) -> None:
    """The factored, chunked copying score against the definition: each sampled token's OV logits over the whole
    vocabulary, `LN1(emb) W_V W_O W_U`, and whether the token itself is the argmax (zoo:gpt2-tiny, where
    some heads copy); a small `max_elements` forces many vocabulary chunks, tokens cut mid-chunk included."""
    from lmscope.heads import copying_score, unembedding
    from lmscope.heads.ov import head_inputs, layer_embeddings

    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    got = copying_score(model, n_tokens=96, seed=4, max_elements=5000, fold_ln=fold)
    ids = torch.randperm(model.cfg.d_vocab, generator=torch.Generator().manual_seed(4))[:96]
    x = head_inputs(model, layer_embeddings(model, ids))  # [layer, n, d]
    logits = torch.einsum("lnd,lhde,lhem,mv->lhnv", x, model.W_V, model.W_O, unembedding(model, fold_ln=fold))
    expected = (logits.argmax(-1) == ids).float().mean(-1)
    assert torch.equal(got, expected)
    assert got.max() > 0.1  # not vacuous: head 0.2 copies
