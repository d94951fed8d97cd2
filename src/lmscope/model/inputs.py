"""Turning what users pass (a string, a list of strings, token ids) into a padded token batch.

A string is tokenized exactly as the model's own tokenizer does it, `tokenizer(text)` with its special
tokens: a BOS appears where the tokenizer adds one, and nowhere else. `prepend_bos=True` makes position 0
of every string a BOS (prepended where the tokenizer adds none); `prepend_bos=False` strips the BOS the
tokenizer adds. The rule is "what the tokenizer adds", not "the tokenizer has a bos_token": SmolLM2's
tokenizer names `<|im_start|>` as its BOS (a chat-turn token) but never adds it to plain text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lmscope.errors import InputError

_PROBE = "lmscope probe 12 x"
"""Text encoded with and without special tokens to see what the tokenizer adds around a text."""


@dataclass(frozen=True)
class TokenBatch:
    """`input_ids [batch, pos]` and `attention_mask [batch, pos]` (1 = real token; padding on the right)."""

    input_ids: Tensor
    attention_mask: Tensor

    @property
    def lengths(self) -> Tensor:
        return self.attention_mask.sum(dim=1)

    def last_positions(self) -> Tensor:
        """Index of each row's last real token (where next-token logits live)."""
        return self.lengths - 1


Inputs = str | Sequence[str] | Tensor | TokenBatch
"""What every run method takes: text(s), token ids, or a batch from `to_tokens`."""


def added_special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """`(prefix, suffix)`: the token ids `tokenizer(text)` puts before and after the text's own tokens."""
    full = list(tokenizer(_PROBE)["input_ids"])
    bare = list(tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    return [], []  # a tokenizer that rewrites the text itself when adding specials: treat it as adding none


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether `tokenizer(text)` starts every text with the tokenizer's BOS token (probed, not assumed)."""
    if tokenizer is None or getattr(tokenizer, "bos_token_id", None) is None:
        return False
    prefix, _suffix = added_special_tokens(tokenizer)
    return prefix[:1] == [tokenizer.bos_token_id]


def add_bos_template(tokenizer: Any) -> Any:
    """Make a fast (`tokenizers`-backed) tokenizer add its BOS at the start of every text, in place.

    lmscope's synthetic-corpus models are trained with a BOS before every document; a tokenizer that adds it
    makes `tokenizer(text)` what those models see. Saved with `save_pretrained`, the template lands in
    `tokenizer.json` as a `TemplateProcessing` post-processor, so it survives a reload.
    """
    if getattr(tokenizer, "bos_token_id", None) is None:
        raise InputError("tokenizer: has no bos_token, so it cannot add one")
    tokenizer.add_bos_token = True  # transformers rewrites the backend's post-processor from this flag
    if not tokenizer_adds_bos(tokenizer):
        raise InputError(f"tokenizer: {type(tokenizer).__name__} did not take a BOS template")
    return tokenizer


def encode_texts(texts: list[str], tokenizer: Any, *, prepend_bos: bool | None, adds_bos: bool) -> list[list[int]]:
    """Token ids of each text: `tokenizer(text)`, then a BOS added (`prepend_bos=True`) or the tokenizer's
    own BOS removed (`prepend_bos=False`); `adds_bos` is `tokenizer_adds_bos(tokenizer)`."""
    rows = [list(r) for r in tokenizer(texts)["input_ids"]]
    if prepend_bos and not adds_bos:
        if tokenizer.bos_token_id is None:
            raise InputError("prepend_bos=True: the tokenizer has no bos_token to prepend")
        rows = [[tokenizer.bos_token_id, *r] for r in rows]
    elif prepend_bos is False and adds_bos:
        rows = [r[1:] if r[:1] == [tokenizer.bos_token_id] else r for r in rows]
    return rows


def to_token_batch(inputs: Inputs, tokenizer: Any, *, prepend_bos: bool | None, device: torch.device,
                   adds_bos: bool | None = None) -> TokenBatch:
    """Tokenize `inputs`; strings need a tokenizer, tensors are used as they are (`[pos]` or `[batch, pos]`),
    and a `TokenBatch` (from `to_tokens`) passes through with its mask.

    Strings: `prepend_bos=None` gives exactly `tokenizer(text)`; True/False force a BOS at position 0 or
    none (see the module docstring). `adds_bos` saves probing the tokenizer on every call.
    """
    if isinstance(inputs, TokenBatch):
        return TokenBatch(inputs.input_ids.to(device), inputs.attention_mask.to(device))
    if isinstance(inputs, Tensor):
        if inputs.dtype not in (torch.int64, torch.int32) or inputs.ndim not in (1, 2):
            raise InputError(f"inputs: expected token ids of shape [pos] or [batch, pos], got a {inputs.dtype} "
                             f"tensor of shape {tuple(inputs.shape)}")
        ids = (inputs[None] if inputs.ndim == 1 else inputs).to(device=device, dtype=torch.long)
        return TokenBatch(ids, torch.ones_like(ids))
    if isinstance(inputs, str):
        texts = [inputs]
    elif isinstance(inputs, Sequence) and inputs and all(isinstance(t, str) for t in inputs):
        texts = list(inputs)
    else:
        raise InputError(f"inputs: expected a string, a non-empty list of strings or a token tensor, "
                         f"got {type(inputs).__name__}")
    if tokenizer is None:
        raise InputError("inputs: strings need a tokenizer; this model was wrapped without one (pass token ids)")
    if adds_bos is None:
        adds_bos = tokenizer_adds_bos(tokenizer)
    rows = encode_texts(texts, tokenizer, prepend_bos=prepend_bos, adds_bos=adds_bos)
    if any(len(r) == 0 for r in rows):
        raise InputError("inputs: an empty string gives no tokens; pass prepend_bos=True or a non-empty text")
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return TokenBatch(ids.to(device), mask.to(device))


def check_fits(input_ids: Tensor, *, n_ctx: int, d_vocab: int) -> None:
    """Refuse token ids a model with context `n_ctx` and vocabulary `d_vocab` cannot take, in one line naming
    the limit (the model would otherwise fail deep inside with an IndexError, or read past its position table).

    `n_ctx` is the adapter's context length (GPT-2's `n_positions`; `max_position_embeddings` for rotary
    models, whose positions have no hard table but were trained only up to it)."""
    n = int(input_ids.shape[-1])
    if n > n_ctx:
        raise InputError(f"inputs: {n} tokens, longer than the model's context of {n_ctx} (n_ctx); "
                         "shorten the text or split it")
    if input_ids.numel():
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= d_vocab:
            bad = lo if lo < 0 else hi
            raise InputError(f"inputs: token id {bad} is outside the model's vocabulary (ids 0..{d_vocab - 1}, "
                             f"d_vocab {d_vocab})")
