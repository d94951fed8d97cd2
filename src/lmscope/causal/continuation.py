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
from typing import Any

import torch
from torch import Tensor

from lmscope.data.topics import TOXIC_WORDS
from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel
from lmscope.model.window import KV, cache_keyword


@dataclass
class Continuation:
    """Greedy-decode `n_tokens` (the first from the patched run's next-token logits), then
    `score_tokens(tokens [rows, n_tokens], index [rows]) -> [rows]`."""

    n_tokens: int
    score_tokens: Callable[[Tensor, Tensor], Tensor]

    def __post_init__(self) -> None:
        if self.n_tokens < 1:
            raise InputError(f"continuation tokens: expected at least 1, got {self.n_tokens}")


def greedy_continue(model: HookedModel, logits: Tensor, cache: Any, mask: Tensor, next_pos: Tensor,
                    n_tokens: int) -> Tensor:
    """Tokens `[rows, n_tokens]`: argmax of `logits [rows, d_vocab]`, then one cached step at a time.

    `cache` holds every layer's keys/values of the prompt (updated in place), `mask [rows, width]` which of
    its positions each row attends to, `next_pos [rows]` the position of the first new token.
    """
    tokens = [logits.argmax(-1)]
    for step in range(1, n_tokens):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model.hf(input_ids=tokens[-1][:, None], attention_mask=mask, position_ids=(next_pos + step - 1)[:, None],
                       use_cache=True, **{cache_keyword(model.hf): cache})
        tokens.append(out.logits[:, -1].argmax(-1))
    return torch.stack(tokens, dim=1)


def continue_base(model: HookedModel, logits: Tensor, kv: KV, last: Tensor, n_tokens: int) -> Tensor:
    """Greedy continuation of unpatched prompts from their cached keys/values (right padding masked)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.hf.config)
    for layer, (k, v) in enumerate(kv):
        cache.update(k, v, layer)
    mask = (torch.arange(kv[0][0].shape[2])[None] <= last[:, None]).long()
    return greedy_continue(model, logits, cache, mask, last + 1, n_tokens)


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
