"""Standard head detectors (as TransformerLens users know them), for every head at once.

Attention-pattern scores come from one batched forward pass on repeated random tokens,
`[BOS] r_1..r_n r_1..r_n`; the copying score comes from the OV circuit.

- previous-token: mean attention from each position q >= 1 to q - 1.
- duplicate-token: mean attention from each second-half token to its earlier copy (n positions back).
- induction: mean attention from each second-half token to the token after its earlier copy (n - 1 back).
- copying: share of sampled tokens whose own logit is strictly the top logit over the whole vocabulary under
  `LN1_l(emb) @ W_V[l, h] @ W_O[l, h] @ W_U` (effective embeddings as in `succession`; `W_U` read through the
  final norm unless `fold_ln=False`, see `lmscope.heads.ov`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from lmscope.errors import InputError
from lmscope.heads.ov import head_inputs, head_W_O, layer_embeddings, unembedding
from lmscope.model.hooked import HookedModel
from lmscope.results import ResultMixin, numbers

DETECTORS: tuple[str, ...] = ("previous_token", "duplicate_token", "induction", "copying")
Progress = Callable[[str, int, int], None]
"""`progress(stage, i, n)`, called as work completes."""


def _diagonal_mean(patterns: Tensor, back: int, q_start: int) -> Tensor:
    """Mean of `patterns[..., q, q - back]` over queries `q >= q_start` and the batch axis (-4 if present).

    `patterns [..., batch, head, q, k]` -> `[..., head]`.
    """
    if patterns.ndim < 3:
        raise InputError(f"patterns: expected [..., batch, head, q, k], got shape {tuple(patterns.shape)}")
    diag = torch.diagonal(patterns, offset=-back, dim1=-2, dim2=-1)  # [..., head, q - back] for q >= back
    diag = diag[..., max(q_start - back, 0):]
    if diag.shape[-1] == 0:
        raise InputError(f"patterns: {patterns.shape[-2]} positions leave no query at distance {back}")
    score = diag.float().mean(-1)
    return score.mean(-2) if patterns.ndim >= 4 else score


def previous_token_score(patterns: Tensor) -> Tensor:
    """`patterns [..., batch, head, q, k]` -> `[..., head]`: mean attention to the previous position."""
    return _diagonal_mean(patterns, 1, 1)


def duplicate_token_score(patterns: Tensor, seq_len: int, *, bos: bool = True) -> Tensor:
    """Attention from each second-half token of `[BOS] r r` (r of length `seq_len`) to its first copy."""
    return _diagonal_mean(patterns, seq_len, int(bos) + seq_len)


def induction_score(patterns: Tensor, seq_len: int, *, bos: bool = True) -> Tensor:
    """Attention from each second-half token of `[BOS] r r` to the token after its first copy."""
    return _diagonal_mean(patterns, seq_len - 1, int(bos) + seq_len)


def repeated_tokens(model: HookedModel, seq_len: int, n_seqs: int, seed: int = 0) -> Tensor:
    """`[n_seqs, 1 + 2 * seq_len]` ids: BOS (where the model's strings get one: `model.prepend_bos`) then r, r
    (`[n_seqs, 2 * seq_len]` without); r avoids special tokens and repeats no id."""
    tok = model.tokenizer
    bos = getattr(tok, "bos_token_id", None) if tok is not None and model.prepend_bos else None
    special = {i for i in (bos, getattr(tok, "eos_token_id", None), getattr(tok, "pad_token_id", None),
                           getattr(tok, "unk_token_id", None), *(getattr(tok, "all_special_ids", None) or []))
               if isinstance(i, int)}
    pool = torch.tensor([i for i in range(model.cfg.d_vocab) if i not in special])
    if len(pool) < seq_len:
        raise InputError(f"seq_len: {seq_len} distinct tokens needed, the vocabulary has {len(pool)}")
    g = torch.Generator().manual_seed(seed)
    r = torch.stack([pool[torch.randperm(len(pool), generator=g)[:seq_len]] for _ in range(n_seqs)])
    parts = [torch.full((n_seqs, 1), bos)] if bos is not None else []
    return torch.cat([*parts, r, r], dim=1)


def attention_patterns(model: HookedModel, ids: Tensor) -> Tensor:
    """Patterns of every layer on `ids [batch, pos]`: `[layer, batch, head, q, k]`."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    with torch.inference_mode():
        _, cache = model.run_with_cache(ids, names=names, return_logits=False, prepend_bos=False)
    return torch.stack([cache[n].float().cpu() for n in names])


@torch.inference_mode()
def copying_score(model: HookedModel, *, n_tokens: int = 512, mode: str = "auto", seed: int = 0,
                  max_elements: int = 2**24, fold_ln: bool = True, progress: Progress | None = None) -> Tensor:
    """`[layer, head]`: share of `n_tokens` sampled tokens whose own logit is strictly above every other token's
    under the OV circuit (`fold_ln`: `W_U` read through the final norm, see `lmscope.heads.ov`).

    Computed from the low-rank factors, layer by layer and over vocabulary chunks of at most `max_elements`
    logits `[head, n, chunk]`: `(x W_V) (W_O W_U[:, chunk])` costs `d_head / d_model` of `(x W_V W_O) W_U`'s
    multiplications per logit, and no `[layer, head, n, d_vocab]` tensor is ever made.
    """
    d_vocab, n_layers, n_heads = model.cfg.d_vocab, model.cfg.n_layers, model.cfg.n_heads
    g = torch.Generator().manual_seed(seed)
    ids = torch.randperm(d_vocab, generator=g)[:n_tokens]
    x = head_inputs(model, layer_embeddings(model, ids, mode=mode))  # [layer, n, d_model]
    W_V, W_O = model.W_V.float(), head_W_O(model, fold_ln=fold_ln)
    W_U = unembedding(model, fold_ln=fold_ln)  # [d_model, d_vocab]
    own_cols = W_U[:, ids.to(W_U.device)]  # [d_model, n]
    chunk = min(d_vocab, max(1, max_elements // (n_heads * len(ids))))
    arange = torch.arange(len(ids), device=W_U.device)
    hits = torch.zeros(n_layers, n_heads)
    d_head = W_O.shape[2]
    ou_buf = torch.empty(n_heads * d_head * chunk, device=W_U.device)  # reused: fresh tensors cost page faults
    logit_buf = torch.empty(n_heads * len(ids) * chunk, device=W_U.device)
    for layer in range(n_layers):
        z = torch.einsum("nd,hde->hne", x[layer], W_V[layer])  # [head, n, d_head]
        own = (z @ (W_O[layer] @ own_cols))[:, arange, arange]  # [head, n]: each token's own logit
        best_other = torch.full_like(own, float("-inf"))
        for start in range(0, d_vocab, chunk):
            cols = W_U[:, start:start + chunk]
            k = cols.shape[1]
            ou = torch.matmul(W_O[layer], cols, out=ou_buf[: n_heads * d_head * k].view(n_heads, d_head, k))
            logits = torch.matmul(z, ou, out=logit_buf[: n_heads * len(ids) * k].view(n_heads, len(ids), k))
            mine = (ids >= start) & (ids < start + chunk)  # tokens whose own column is in this chunk
            if bool(mine.any()):
                rows = mine.nonzero().flatten().to(logits.device)
                logits[:, rows, ids[mine].to(logits.device) - start] = float("-inf")
            best_other = torch.maximum(best_other, logits.amax(-1))
        hits[layer] = (own > best_other).sum(-1).float().cpu()
        if progress is not None:
            progress("copying score", layer + 1, n_layers)
    return hits / len(ids)


@dataclass
class HeadScores(ResultMixin):
    """Detector scores of every head, each `[n_layers, n_heads]` in [0, 1]."""

    kind: ClassVar[str] = "head_detectors"

    previous_token: Tensor
    duplicate_token: Tensor
    induction: Tensor
    copying: Tensor
    seq_len: int = 20
    n_seqs: int = 8
    seed: int = 0
    model: str = ""
    fold_ln: bool = True

    def scores(self, detector: str) -> Tensor:
        if detector not in DETECTORS:
            raise InputError(f"detector: got {detector!r}, expected one of {', '.join(DETECTORS)}")
        return getattr(self, detector)

    def top_heads(self, detector: str, k: int = 3) -> list[dict[str, Any]]:
        """The `k` best heads for `detector`: `[{"layer", "head", "score"}]`, best first."""
        s = self.scores(detector)
        vals, flat = s.flatten().topk(min(k, s.numel()))
        return [{"layer": int(i) // s.shape[1], "head": int(i) % s.shape[1], "score": float(v)}
                for v, i in zip(vals, flat, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: each detector's scores as a [layer][head] list, plus its top heads."""
        return {
            "model": self.model,
            "seq_len": self.seq_len,
            "n_seqs": self.n_seqs,
            "seed": self.seed,
            "fold_ln": self.fold_ln,
            "scores": {d: self.scores(d).tolist() for d in DETECTORS},
            "top_heads": {d: self.top_heads(d) for d in DETECTORS},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadScores:
        """Rebuild from `to_dict()` (`top_heads` is recomputed from the scores); every detector's grid must be
        `[n_layers, n_heads]` of the same shape."""
        grids = [torch.tensor(numbers(d["scores"][name]), dtype=torch.float32) for name in DETECTORS]
        if any(g.ndim != 2 or g.shape != grids[0].shape for g in grids):
            raise ValueError(f"scores: expected {', '.join(DETECTORS)} as [layer][head] grids of one shape")
        return cls(*grids, seq_len=int(d["seq_len"]), n_seqs=int(d["n_seqs"]), seed=int(d["seed"]),
                   model=str(d["model"]), fold_ln=bool(d["fold_ln"]))


def detect_heads(model: HookedModel, *, seq_len: int = 20, n_seqs: int = 8, seed: int = 0,
                 copying_mode: str = "auto", n_copy_tokens: int = 512, fold_ln: bool = True,
                 progress: Progress | None = None) -> HeadScores:
    """Previous-token, duplicate-token, induction and copying scores of every head (`fold_ln`: the copying
    score reads `W_U` through the final norm; `progress(stage, i, n)` as stages complete)."""
    if seq_len < 2 or n_seqs < 1:
        raise InputError(f"seq_len, n_seqs: expected seq_len >= 2 and n_seqs >= 1, got {seq_len}, {n_seqs}")
    ids = repeated_tokens(model, seq_len, n_seqs, seed)
    bos = ids.shape[1] == 2 * seq_len + 1
    if progress is not None:
        progress("attention patterns", 0, 1)
    patterns = attention_patterns(model, ids)  # [layer, batch, head, q, k]
    if progress is not None:
        progress("attention patterns", 1, 1)
    return HeadScores(
        previous_token=previous_token_score(patterns),
        duplicate_token=duplicate_token_score(patterns, seq_len, bos=bos),
        induction=induction_score(patterns, seq_len, bos=bos),
        copying=copying_score(model, n_tokens=n_copy_tokens, mode=copying_mode, seed=seed, fold_ln=fold_ln,
                              progress=progress),
        seq_len=seq_len, n_seqs=n_seqs, seed=seed, model=model.name, fold_ln=fold_ln,
    )
