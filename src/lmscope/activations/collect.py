"""Word-level activations of sentences, in memory: the computation behind every store shard.

`word_activations` runs length-sorted batches (right-padded: under causal attention real positions never
see the padding), captures the hook points, and aggregates each word's subword tokens to one row, rows in
sentence order. Hooks (e.g. ablations) can run in the same pass, so evaluation can re-extract under an
intervention with the very code that built the store.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lmscope.activations.align import Aggregation, aggregate_words, encode_words
from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel, HookFn


def point_dim(model: HookedModel, point: str) -> int:
    """Width of one token's activation at a hook point (`hook_z` flattened over heads)."""
    c = model.cfg
    if point.endswith(("mlp.hook_pre", "mlp.hook_post")):
        return c.d_mlp
    return c.n_heads * c.d_head if point.endswith("attn.hook_z") else c.d_model


MAX_PADDING = 0.1
"""Largest share of padding a batch may carry: padded positions cost a full forward each."""


def _batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Sentence indices in length-sorted batches within the token budget and at most 10% padding."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        width = lengths[i]  # sorted ascending: the newest sentence is the widest
        padded = width * (len(current) + 1)
        if current and (padded > batch_tokens or padded - (real + width) > MAX_PADDING * padded):
            batches.append(current)
            current, real = [], 0
        current.append(i)
        real += width
    if current:
        batches.append(current)
    return batches


def word_activations(model: HookedModel, sentences: Sequence[Sequence[str]], points: Sequence[str], *,
                     aggregate: Aggregation = "last", dtype: torch.dtype = torch.float32, batch_tokens: int = 4096,
                     hooks: Sequence[tuple[str, HookFn]] = (), first_line: int = 1,
                     corpus_name: str = "corpus") -> dict[str, torch.Tensor]:
    """`{point: [n_words, d]}` for every word of `sentences` (rows in order), with `hooks` applied."""
    ids, word_ids = encode_words(model.tokenizer, sentences)
    bos = [model.tokenizer.bos_token_id] if model.prepend_bos else []
    rows = [bos + r for r in ids]
    lengths = [len(r) for r in rows]
    too_long = [i for i, n in enumerate(lengths) if n > model.cfg.n_ctx]
    if too_long:
        i = too_long[0]
        raise InputError(f"{corpus_name}:{first_line + i}: sentence has {lengths[i]} tokens; the model's context "
                         f"is {model.cfg.n_ctx}")
    word_counts = np.array([len(s) for s in sentences])
    row_start = np.concatenate([[0], np.cumsum(word_counts)[:-1]])
    out = {p: torch.empty(int(word_counts.sum()), point_dim(model, p), dtype=dtype) for p in points}
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    for batch in _batches(lengths, batch_tokens):
        width = max(lengths[i] for i in batch)
        tokens = torch.full((len(batch), width), pad, dtype=torch.long)
        for j, i in enumerate(batch):
            tokens[j, : lengths[i]] = torch.tensor(rows[i])
        # right padding under causal attention: real positions never see the padding, so no mask is needed
        _, cache = model.run_with_cache(tokens, names=list(points), return_logits=False, hooks=hooks)
        # token -> global word id (offset per sentence so words of different sentences never merge)
        offset = len(bos)
        wid = torch.cat([torch.from_numpy(word_ids[i] + row_start[i]) for i in batch])
        keep = torch.zeros(tokens.shape, dtype=torch.bool)
        for j, i in enumerate(batch):
            keep[j, offset: lengths[i]] = True
        n_words = int(word_counts[batch].sum())
        # global word ids in this batch are not contiguous: remap to 0..n_words-1, aggregate, scatter back
        uniq, local = torch.unique(wid, return_inverse=True)
        for p in points:
            acts = cache[p][keep].reshape(int(keep.sum()), -1)
            out[p][uniq] = aggregate_words(acts, local, n_words, aggregate).to(dtype)
    return out
