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
    with pytest.raises(InputError, match=r"seq_len, n_seqs: expected seq_len >= 2 .* got 1, 8"):
        detect_heads(prev_model, seq_len=1)
    with pytest.raises(InputError, match=r"patterns: expected \[\.\.\., batch, head, q, k\], got shape \(1, 1\)"):
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


def _planted_ov_model() -> HookedModel:
    """A random-init tiny GPT-2 (vocab 61, d 32, 4 heads of 8, 2 layers) with planted OV circuits, no tokenizer.

    Embeddings (tied to `W_U`) are unit vectors with zero mean over `d_model`, half their norm in an 8-dim
    subspace S (spanned by `Q_S`, orthogonal to the ones vector) and half outside it, so LN1 (gain 1, bias 0)
    only rescales them and their projections onto S all have norm 1/sqrt(2). MLP0 is zeroed, so the heads of
    layer 1 read the raw embeddings too (mode "mlp0": `x + MLP0(LN2(x)) = x`). Per layer:

    - head 0: `W_V = Q_S`, `W_O = Q_S^T`: OV logits `<P e_t, P e_j>`, largest at j = t (equal norms, Cauchy-
      Schwarz): every token copies itself, copying score 1 exactly.
    - head 1: `W_O = -Q_S^T` (anti-copying): each token's own logit is the smallest, score 0.
    - head 2: `W_V = 0`: all logits tie, no token is strictly on top, score 0.
    - head 3: a random rotation of S between V and O: the own logit wins only by chance (about 1/61).

    Layer 0's Q/K of head 0 match tokens (`W_Q = c Q_S`, `W_K = Q_S`) with positions zeroed: a duplicate-token
    head (each second-half query splits its attention between itself and its first copy: score 1/2).
    """
    from tiny_models import tiny_hf_model

    hf = tiny_hf_model("gpt2")
    d, dh, vocab = 32, 8, 61
    g = torch.Generator().manual_seed(11)
    q = torch.linalg.qr(torch.cat([torch.ones(d, 1), torch.randn(d, d - 1, generator=g)], 1)).Q[:, 1:]
    q_s, q_r = q[:, :dh], q[:, dh:]  # S and the rest of the ones vector's complement
    a = torch.nn.functional.normalize(torch.randn(vocab, dh, generator=g), dim=1)
    b = torch.nn.functional.normalize(torch.randn(vocab, d - 1 - dh, generator=g), dim=1)
    emb = (a @ q_s.T + b @ q_r.T) / math.sqrt(2)  # [vocab, d]: unit rows, zero mean
    rot = torch.linalg.qr(torch.randn(dh, dh, generator=g)).Q
    with torch.no_grad():
        hf.transformer.wte.weight.copy_(emb)
        hf.transformer.wpe.weight.zero_()
        hf.transformer.ln_f.weight.fill_(1.0)
        hf.transformer.ln_f.bias.zero_()
        for layer, block in enumerate(hf.transformer.h):
            block.ln_1.weight.fill_(1.0)
            block.ln_1.bias.zero_()
            for p in (block.mlp.c_fc.weight, block.mlp.c_fc.bias, block.mlp.c_proj.weight, block.mlp.c_proj.bias):
                p.zero_()
            w, o = block.attn.c_attn, block.attn.c_proj
            w.bias.zero_()
            o.bias.zero_()
            v = slice(2 * d, 3 * d)
            w.weight[:, v] = 0
            w.weight[:, 2 * d: 2 * d + dh] = q_s  # head 0
            w.weight[:, 2 * d + dh: 2 * d + 2 * dh] = q_s  # head 1
            w.weight[:, 2 * d + 3 * dh: 2 * d + 4 * dh] = q_s @ rot  # head 3 (head 2 keeps W_V = 0)
            o.weight.zero_()
            o.weight[0:dh] = q_s.T
            o.weight[dh: 2 * dh] = -q_s.T
            o.weight[3 * dh: 4 * dh] = q_s.T
            if layer == 0:
                w.weight[:, 0:dh] = 50.0 * q_s  # head 0 queries its own token...
                w.weight[:, d: d + dh] = q_s  # ...against each key's token
    return HookedModel(hf, None)


def test_planted_copying_heads_score_their_known_answers() -> None:
    """Copying heads score 1, anti-copying and silent heads 0, a rotated head near chance: a detector that
    returned a constant, or ranked heads by OV norm, fails (heads 0 and 1 have the same norms)."""
    from lmscope.heads import copying_score

    model = _planted_ov_model()
    for fold in (True, False):  # the final norm is the identity here, so folding changes nothing
        got = copying_score(model, n_tokens=61, fold_ln=fold)
        assert got.shape == (2, 4)
        assert got[:, 0].tolist() == [1.0, 1.0]
        assert got[:, 1].tolist() == [0.0, 0.0] and got[:, 2].tolist() == [0.0, 0.0]
        assert got[:, 3].max() <= 0.1
    scores = detect_heads(model, seq_len=12, n_seqs=3, n_copy_tokens=61)
    assert scores.top_heads("copying", 2) == [{"layer": 0, "head": 0, "score": 1.0},
                                              {"layer": 1, "head": 0, "score": 1.0}]


def test_planted_duplicate_token_head() -> None:
    """Layer 0 head 0 attends by token identity only: on `r r` each second-half query has two equal keys (itself
    and its first copy), so its duplicate-token score is 1/2 and its previous-token and induction scores ~0."""
    model = _planted_ov_model()
    scores = detect_heads(model, seq_len=12, n_seqs=3, n_copy_tokens=61)
    assert scores.duplicate_token[0, 0].item() == pytest.approx(0.5, abs=0.01)
    assert scores.previous_token[0, 0].item() < 0.05 and scores.induction[0, 0].item() < 0.05
    others = scores.duplicate_token.flatten()[1:]  # every other head: no Q/K weights, uniform causal attention
    assert others.max().item() < 0.1


def _planted_induction_model() -> HookedModel:
    """A two-layer induction circuit built by hand on a tiny GPT-2 (no tokenizer, MLPs zeroed, LN gains 1).

    Orthonormal subspaces, all orthogonal to the ones vector (so LayerNorm only rescales, equally at every
    position): P (2 dims) carries the position on a circle, A (8) the token, B (8) the previous token.
    Head 0.0 is a previous-token head (its query is the position turned one step back) whose OV circuit copies
    the attended token from A into B; head 1.0 matches its query's token (A) against each key's previous token
    (B), so on `r r` every second-half token attends to the token after its first copy. Every other head has
    zero weights (uniform attention, no output).
    """
    from tiny_models import tiny_hf_model

    hf = tiny_hf_model("gpt2")
    d, dh, vocab = 32, 8, 61
    g = torch.Generator().manual_seed(5)
    q = torch.linalg.qr(torch.cat([torch.ones(d, 1), torch.randn(d, d - 1, generator=g)], 1)).Q[:, 1:]
    p, a_sub, b_sub = q[:, :2], q[:, 2:2 + dh], q[:, 2 + dh:2 + 2 * dh]
    a = torch.nn.functional.normalize(torch.randn(vocab, dh, generator=g), dim=1)
    pos = torch.arange(64, dtype=torch.float32)[:, None] * OMEGA
    with torch.no_grad():
        hf.transformer.wte.weight.copy_(a @ a_sub.T)
        hf.transformer.wpe.weight.copy_(torch.cos(pos) * p[:, 0] + torch.sin(pos) * p[:, 1])
        for block in hf.transformer.h:
            block.ln_1.weight.fill_(1.0)
            block.ln_1.bias.zero_()
            for t in (block.mlp.c_fc.weight, block.mlp.c_fc.bias, block.mlp.c_proj.weight, block.mlp.c_proj.bias,
                      block.attn.c_attn.weight, block.attn.c_attn.bias, block.attn.c_proj.weight,
                      block.attn.c_proj.bias):
                t.zero_()
        w0, o0 = hf.transformer.h[0].attn.c_attn.weight, hf.transformer.h[0].attn.c_proj.weight
        w0[:, 0] = 200.0 * (math.cos(OMEGA) * p[:, 0] + math.sin(OMEGA) * p[:, 1])  # q_i . k_j ~ cos((i-1-j) OMEGA)
        w0[:, 1] = 200.0 * (-math.sin(OMEGA) * p[:, 0] + math.cos(OMEGA) * p[:, 1])
        w0[:, d], w0[:, d + 1] = p[:, 0], p[:, 1]
        w0[:, 2 * d: 2 * d + dh] = a_sub  # V reads the token...
        o0[0:dh] = b_sub.T  # ...and O writes it into B
        w1 = hf.transformer.h[1].attn.c_attn.weight
        w1[:, 0:dh] = 50.0 * a_sub  # Q: this token
        w1[:, d:d + dh] = b_sub  # K: the previous token
    return HookedModel(hf, None)


def test_planted_induction_head() -> None:
    """On `r r` (n = 12, no BOS) head 1.0's second-half queries attend to the token after their first copy, except
    the first one (r_1 again), whose previous-token slot is matched both by position 1 and by position 0 (head 0.0
    attends to itself there): induction score (n - 1/2) / n, duplicate-token score (1/2) / n. Head 0.0 is the
    previous-token head; no other head attends anywhere in particular."""
    n = 12
    scores = detect_heads(_planted_induction_model(), seq_len=n, n_seqs=4, n_copy_tokens=61)
    assert scores.induction[1, 0].item() == pytest.approx((n - 0.5) / n, abs=0.005)
    assert scores.duplicate_token[1, 0].item() == pytest.approx(0.5 / n, abs=0.005)
    assert scores.previous_token[0, 0].item() > 0.98
    assert scores.top_heads("induction", 1)[0]["layer"] == 1 and scores.top_heads("induction", 1)[0]["head"] == 0
    assert scores.induction[0, 0].item() < 0.01 and scores.previous_token[1, 0].item() < 0.1
    uniform = [scores.induction[layer, h].item() for layer in (0, 1) for h in (1, 2, 3)]
    assert max(uniform) < 0.1  # uniform causal attention over up to 24 positions
