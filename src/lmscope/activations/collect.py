"""Word-level activations of sentences, in memory: the computation behind every store shard.

`word_activations` runs length-sorted batches (right-padded: under causal attention real positions never
see the padding), captures the hook points, and aggregates each word's subword tokens to one row, rows in
sentence order. Hooks (e.g. ablations) can run in the same pass, so evaluation can re-extract under an
intervention with the very code that built the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
import torch

from lmscope.activations.align import AGGREGATIONS, Aggregation, aggregate_words, encode_words
from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel, HookFn


def point_dim(model: HookedModel, point: str) -> int:
    """Width of one token's activation at a hook point (`HookedModel.hook_width`: `hook_z` flattened over heads,
    an attached dictionary's feature point its number of features)."""
    return model.hook_width(point)


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
    """`{point: [n_words, d]}` for every word of `sentences` (rows in order), with `hooks` applied.

    Index bookkeeping is done once for the whole corpus (flat numpy arrays); per batch there is one
    gather per point (`first`/`last`: the word's chosen token; `mean`: all its tokens) and one row scatter.
    """
    if aggregate not in AGGREGATIONS:
        raise InputError(f"aggregate: expected one of {', '.join(AGGREGATIONS)}, got {aggregate!r}")
    ids, word_ids = encode_words(model.tokenizer, sentences)
    n_bos = 1 if model.prepend_bos else 0
    n_tok = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    lengths = n_tok + n_bos
    too_long = np.flatnonzero(lengths > model.cfg.n_ctx)
    if len(too_long):
        i = int(too_long[0])
        raise InputError(f"{corpus_name}:{first_line + i}: sentence has {lengths[i]} tokens; the model's context "
                         f"is {model.cfg.n_ctx}")
    word_counts = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
    row_start = np.cumsum(word_counts) - word_counts  # first output row of each sentence
    tok_start = np.cumsum(n_tok) - n_tok  # first token of each sentence in the flat token stream
    flat_ids = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(n_tok.sum()))
    flat_words = np.concatenate(word_ids) if word_ids else np.zeros(0, dtype=np.int64)  # word in sentence
    # position (in its padded row, BOS included) of the token that stands for each word
    if aggregate != "mean":
        global_word = flat_words + np.repeat(row_start, n_tok)  # non-decreasing: words are consecutive
        pick = np.searchsorted(global_word, np.arange(int(word_counts.sum())),
                               side="left" if aggregate == "first" else "right") - (aggregate == "last")
        word_pos = pick - np.repeat(tok_start, word_counts) + n_bos
    out = {p: torch.empty(int(word_counts.sum()), point_dim(model, p), dtype=dtype) for p in points}
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    names = list(points)
    for batch in _batches(lengths.tolist(), batch_tokens):
        b = np.asarray(batch, dtype=np.int64)
        width = int(lengths[b].max())
        # right padding under causal attention: real positions never see the padding, so no mask is needed
        cols = np.arange(width - n_bos)
        real = cols < n_tok[b, None]
        tokens = np.full((len(b), width), pad, dtype=np.int64)
        if n_bos:
            tokens[:, 0] = model.tokenizer.bos_token_id
        tokens[:, n_bos:][real] = flat_ids[(tok_start[b, None] + cols)[real]]
        _, cache = model.run_with_cache(torch.from_numpy(tokens), names=names, return_logits=False, hooks=hooks)
        # the batch's words in batch order, and the output row of each
        counts = word_counts[b]
        batch_row = np.repeat(np.arange(len(b)), counts)
        dest_np = np.arange(int(counts.sum())) + np.repeat(row_start[b] - (np.cumsum(counts) - counts), counts)
        dest = torch.from_numpy(dest_np)
        if aggregate == "mean":
            # every real token, row-major, and its word's place in the batch's word list
            src = torch.from_numpy((np.arange(len(b))[:, None] * width + n_bos + cols)[real])
            local = torch.from_numpy(flat_words[(tok_start[b, None] + cols)[real]]
                                     + np.repeat(np.cumsum(counts) - counts, n_tok[b]))
        else:
            src = torch.from_numpy(batch_row * width + word_pos[dest_np])
        device = cache[names[0]].device if names else torch.device("cpu")
        src = src.to(device)
        if aggregate == "mean":
            local = local.to(device)
        for p in points:
            t = cache[p]
            acts = t.reshape(t.shape[0] * t.shape[1], -1).index_select(0, src)
            if aggregate == "mean":
                acts = aggregate_words(acts, local, len(dest_np), "mean")
            out[p].index_copy_(0, dest, acts.to(device="cpu", dtype=dtype))
    return out
