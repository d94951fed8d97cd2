"""Subword-to-word alignment and aggregation of token activations to one vector per word."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from lmscope.errors import InputError

Aggregation = Literal["first", "last", "mean"]
AGGREGATIONS: tuple[str, ...] = ("first", "last", "mean")


def encode_words(tokenizer: Any, sentences: Sequence[Sequence[str]]) -> tuple[list[list[int]], list[np.ndarray]]:
    """Token ids of `" ".join(words)` for each sentence, and for each token the index of its word.

    A token starting at the space before word i belongs to word i (GPT-2 style "Ġword" tokens), so
    every token maps to exactly one word and every word has at least one token.
    """
    texts = [" ".join(words) for words in sentences]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    word_ids = []
    for words, offsets in zip(sentences, enc["offset_mapping"], strict=True):
        lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
        ends = np.cumsum(lengths + 1) - 1  # char index just after each word
        starts = np.concatenate([[0], ends[:-1]])  # the separating space belongs to the next word
        token_starts = np.fromiter((s for s, _ in offsets), dtype=np.int64, count=len(offsets))
        ids = np.searchsorted(starts, token_starts, side="right") - 1
        if len(ids) == 0 or np.unique(ids).size != len(words):
            raise InputError(f"sentence {' '.join(words)[:60]!r}: some word got no token")
        word_ids.append(ids)
    return enc["input_ids"], word_ids


def aggregate_words(acts: Tensor, word_ids: Tensor, n_words: int, how: Aggregation) -> Tensor:
    """Aggregate `acts [tokens, d]` into `[n_words, d]` (row w = word w) by `word_ids [tokens]`.

    Each word's tokens must be consecutive; words may come in any order (batches are length-sorted).
    """
    if how == "mean":
        out = torch.zeros(n_words, acts.shape[1], dtype=torch.float32, device=acts.device)
        out.index_add_(0, word_ids, acts.float())
        counts = torch.bincount(word_ids, minlength=n_words).clamp(min=1).to(out.dtype)
        return (out / counts[:, None]).to(acts.dtype)
    change = torch.ones(len(word_ids), dtype=torch.bool, device=acts.device)
    if how == "first":
        change[1:] = word_ids[1:] != word_ids[:-1]
    elif how == "last":
        change[:-1] = word_ids[1:] != word_ids[:-1]
    else:
        raise InputError(f"aggregate: expected one of {', '.join(AGGREGATIONS)}, got {how!r}")
    out = torch.empty(n_words, acts.shape[1], dtype=acts.dtype, device=acts.device)
    out[word_ids[change]] = acts[change]
    return out
