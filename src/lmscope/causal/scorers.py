"""Outcome scorers: functions of the next-token logits `[rows, d_vocab]` that patching and mediation measure.

- `lexicon_mass`: probability the model puts on the first tokens of a word list (default: the synthetic
  corpus's toxic words), the default toxicity outcome;
- `lexicon_hit`: 1 when the greedy next token is in the list (a greedy continuation of one token);
- `logit_diff`, `target_prob`: the usual patching metrics, with one target per row or one for all;
- `callable_outcome`: any `fn(logits, index)`, e.g. from a plugin.

Text scorers rate whole texts (for observed outcomes): `greedy_lexicon_rate` (hit rate of a greedy
continuation) and `HFClassifierScorer` (a local HF sequence classifier, loaded only when asked for).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmscope.causal.engine import Outcome
from lmscope.data.topics import TOXIC_WORDS
from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel


def word_token_ids(model: HookedModel, words: Sequence[str], *, leading_space: bool = True) -> Tensor:
    """The first token id of each word as it appears mid-sentence (`" word"`), duplicates removed."""
    if model.tokenizer is None:
        raise InputError("model: word lists need a tokenizer")
    ids: list[int] = []
    for w in words:
        if not w.strip():
            raise InputError(f"word list: empty word {w!r}")
        toks = model.tokenizer((" " if leading_space else "") + w.strip(), add_special_tokens=False)["input_ids"]
        if toks and toks[0] not in ids:
            ids.append(toks[0])
    if not ids:
        raise InputError("word list: no word gave a token")
    return torch.tensor(ids)


def lexicon_mass(model: HookedModel, words: Sequence[str] = TOXIC_WORDS, *, log: bool = False) -> Outcome:
    """P(next token starts a word of `words`): the default toxicity outcome (`log=True`: its logarithm,
    which puts rare and common insults on one scale)."""
    ids = word_token_ids(model, words)

    def score(logits: Tensor, index: Tensor) -> Tensor:
        logp = logits.float().log_softmax(-1)[:, ids].logsumexp(-1)
        return logp if log else logp.exp()

    return score


def lexicon_hit(model: HookedModel, words: Sequence[str] = TOXIC_WORDS) -> Outcome:
    """1.0 when the greedy next token starts a word of `words`, else 0.0."""
    ids = word_token_ids(model, words)

    def score(logits: Tensor, index: Tensor) -> Tensor:
        return torch.isin(logits.argmax(-1), ids).float()

    return score


def _targets(model: HookedModel, target: str | int | Sequence[str | int]) -> Tensor:
    def one(t: str | int) -> int:
        if isinstance(t, int):
            return t
        toks = model.tokenizer(t, add_special_tokens=False)["input_ids"]
        if len(toks) != 1:
            raise InputError(f"target {t!r}: expected a single token, got {len(toks)} tokens")
        return toks[0]

    if isinstance(target, str | int):
        return torch.tensor([one(target)])
    return torch.tensor([one(t) for t in target])


def _pick(logits: Tensor, ids: Tensor, index: Tensor) -> Tensor:
    return logits[:, ids[0]] if len(ids) == 1 else logits.gather(1, ids[index][:, None])[:, 0]


def logit_diff(model: HookedModel, target: str | int | Sequence[str | int],
               foil: str | int | Sequence[str | int]) -> Outcome:
    """logit(target) - logit(foil); one token for all rows or one per base row."""
    t, f = _targets(model, target), _targets(model, foil)
    return lambda logits, index: _pick(logits.float(), t, index) - _pick(logits.float(), f, index)


def target_prob(model: HookedModel, target: str | int | Sequence[str | int]) -> Outcome:
    """P(target token); one token for all rows or one per base row."""
    t = _targets(model, target)
    return lambda logits, index: _pick(logits.float().softmax(-1), t, index)


def callable_outcome(fn: Callable[[Tensor, Tensor], Tensor]) -> Outcome:
    """Wrap any `fn(output, index) -> [rows]`, checking that it returns one number per row."""
    def score(out: Tensor, index: Tensor) -> Tensor:
        y = torch.as_tensor(fn(out, index))
        if y.shape != index.shape:
            raise InputError(f"outcome: expected one value per row ({tuple(index.shape)}), got {tuple(y.shape)}")
        return y

    return score


def greedy_lexicon_rate(model: HookedModel, texts: Sequence[str], words: Sequence[str] = TOXIC_WORDS, *,
                        n_tokens: int = 8) -> Tensor:
    """Share of the `n_tokens` greedy continuation tokens of each text that start a word of `words` `[N]`."""
    ids = word_token_ids(model, words)
    batch = model.to_tokens(list(texts))
    x, last = batch.input_ids, batch.last_positions()
    hits = torch.zeros(len(texts))
    with torch.inference_mode():
        for _ in range(n_tokens):
            logits = model(x)
            nxt = logits[torch.arange(len(texts)), last].argmax(-1)
            hits += torch.isin(nxt, ids).float()
            x = torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)
            last = last + 1
            x[torch.arange(len(texts)), last] = nxt
    return hits / n_tokens


class HFClassifierScorer:
    """Score texts with a local HF sequence classifier (e.g. a toxicity model): P(label `label`) per text."""

    def __init__(self, path: str, label: int | str = 1) -> None:
        self.path = path
        self.label = label
        self._loaded: tuple[Any, Any] | None = None

    def __call__(self, texts: Sequence[str]) -> Tensor:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if self._loaded is None:  # loaded on first use, then kept; safetensors only (pickle files can run code)
            from lmscope.model.loading import PICKLE_SUFFIXES

            where = Path(self.path)
            if where.is_dir() and not any(where.glob("*.safetensors")) and any(
                    p.suffix in PICKLE_SUFFIXES for p in where.iterdir()):
                raise InputError(f"{self.path}: classifier weights only in pickle format, which can run arbitrary "
                                 "code when loaded; convert them to safetensors")
            try:
                self._loaded = (AutoTokenizer.from_pretrained(self.path),
                                AutoModelForSequenceClassification.from_pretrained(self.path,
                                                                                   use_safetensors=True).eval())
            except (OSError, ValueError) as e:
                raise InputError(f"{self.path}: not a local HF sequence classifier ({e})") from None
        tok, clf = self._loaded
        label = clf.config.label2id.get(self.label, self.label) if isinstance(self.label, str) else self.label
        with torch.inference_mode():
            enc = tok(list(texts), return_tensors="pt", padding=True, truncation=True)
            return clf(**enc).logits.softmax(-1)[:, int(label)]
