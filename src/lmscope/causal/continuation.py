"""Outcomes of a greedy continuation: decode a few tokens after each (patched) prompt and score them.

A `Continuation` outcome makes the patching engine keep decoding after the patched forward: the patch
stays where it was (the prompt's last token), the new tokens attend to the patched keys and values, and
`score_tokens` rates what was generated: the share of tokens that start a toxic word
(`continuation_lexicon_rate`), or a local HF sequence classifier on the decoded text
(`continuation_classifier`), or any function. It needs a HookedModel and components at the last token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lmscope.data.topics import TOXIC_WORDS
from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel
from lmscope.model.window import KV, greedy_decode, kv_cache


@dataclass
class Continuation:
    """Greedy-decode `n_tokens` (the first from the patched run's next-token logits), then
    `score_tokens(tokens [rows, n_tokens], index [rows]) -> [rows]`."""

    n_tokens: int
    score_tokens: Callable[[Tensor, Tensor], Tensor]

    def __post_init__(self) -> None:
        if self.n_tokens < 1:
            raise InputError(f"continuation tokens: expected at least 1, got {self.n_tokens}")


def continue_base(model: HookedModel, logits: Tensor, kv: KV, last: Tensor, n_tokens: int) -> Tensor:
    """Greedy continuation of unpatched prompts from their cached keys/values (right padding masked)."""
    mask = (torch.arange(kv[0][0].shape[2])[None] <= last[:, None]).long()
    return greedy_decode(model, logits, kv_cache(model, kv), mask, last + 1, n_tokens)


def continuation_lexicon_rate(model: HookedModel, words: Sequence[str] = TOXIC_WORDS, *,
                              n_tokens: int = 8) -> Continuation:
    """Share of the `n_tokens` greedy continuation tokens that start a word of `words`."""
    from lmscope.causal.scorers import word_token_ids

    ids = word_token_ids(model, words)
    return Continuation(n_tokens, lambda tokens, index: torch.isin(tokens, ids).float().mean(1))


def continuation_classifier(model: HookedModel, path: str, *, label: int | str = 1,
                            n_tokens: int = 8) -> Continuation:
    """P(`label`) of a local HF sequence classifier on each decoded greedy continuation."""
    from lmscope.causal.scorers import HFClassifierScorer

    classify = HFClassifierScorer(path, label)
    return Continuation(n_tokens, lambda tokens, index: classify(model.tokenizer.batch_decode(tokens)))
