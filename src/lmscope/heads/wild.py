"""Successor heads in the wild (Gould et al. 2023, section 5): on running text, which head's direct effect
matters most for each next token, and what kind of token that is.

For every position, each head's direct effect is mean-ablated: its output `z @ W_O` is replaced by its
mean over the corpus and the difference is carried to the logits through the final norm frozen at the
position's scale (the head's direct path only). The head whose ablation raises the loss of the correct next
token most is that token's head. Each token is then sorted by rule, first match wins:
- succession: the token is the successor (in a succession task, roman numerals included) of an earlier item;
- greater_than: a number greater than every earlier number of the same width ("from 1732 to 17" -> 89);
- copying: the token already occurred earlier in the text;
- acronym: an upper-case letter that starts an earlier capitalised word;
- other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmscope.data.sequences import ALL_TASKS, CYCLIC_TASKS
from lmscope.errors import InputError
from lmscope.fileio import atomic_write_json
from lmscope.model.hooked import HookedModel
from lmscope.model.norms import frozen_divisor, norm_parts

CATEGORIES: tuple[str, ...] = ("succession", "greater_than", "copying", "acronym", "other")
_SUCCESSORS: dict[str, set[str]] = {}
for _task, _items in ALL_TASKS.items():
    for _i, _item in enumerate(_items):
        _nxt = _i + 1 if _i + 1 < len(_items) else (0 if _task in CYCLIC_TASKS else None)
        if _nxt is not None:
            _SUCCESSORS.setdefault(_items[_nxt], set()).add(_item)


def classify(context: Sequence[str], target: str) -> str:
    """The category of next token `target` after the tokens `context` (rules in the module docstring)."""
    seen = [t.strip() for t in context]
    word = target.strip()
    if word in _SUCCESSORS and _SUCCESSORS[word] & set(seen):
        return "succession"
    earlier = [int(s) for s in seen if s.isdigit() and len(s) == len(word)]
    if word.isdigit() and earlier and int(word) > max(earlier):
        return "greater_than"
    if target in context or (word and word in seen):
        return "copying"
    if len(word) == 1 and word.isupper() and any(len(s) > 1 and s[0] == word and s[0].isupper() for s in seen):
        return "acronym"
    return "other"


def frozen_norm_map(norm: nn.Module, x: Tensor, c: Tensor) -> Tensor:
    """The final norm at `x [..., d]`, linearised with its per-token scale frozen, applied to `c [..., k, d]`.

    LayerNorm: `gamma * (c - mean(c)) / sigma(x)`; RMSNorm: `gamma * c / rms(x)` (no bias: a difference).
    """
    parts = norm_parts(norm)
    if parts.centers:
        c = c - c.mean(-1, keepdim=True)
    out = c / frozen_divisor(norm, x)[..., None, None]
    return out if parts.weight is None else out * parts.weight


@dataclass
class WildResult:
    """Per head, how often it is the most important head for a next token, by category.

    `counts [layer, head, category]` (categories in `CATEGORIES`); `examples[(layer, head)]` a few cases.
    """

    counts: Tensor
    n_tokens: int
    examples: dict[tuple[int, int], list[dict[str, Any]]] = field(default_factory=dict)

    def head_summary(self, layer: int, head: int) -> dict[str, Any]:
        c = self.counts[layer, head]
        total = int(c.sum())
        return {"layer": layer, "head": head, "tokens": total,
                "shares": {k: (float(c[i]) / total if total else 0.0) for i, k in enumerate(CATEGORIES)}}

    def to_dict(self) -> dict[str, Any]:
        return {"categories": list(CATEGORIES), "counts": self.counts.tolist(), "n_tokens": self.n_tokens,
                "examples": {f"{layer}.{head}": ex for (layer, head), ex in self.examples.items()}}

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        return atomic_write_json(Path(directory) / "result.json", self.to_dict(), overwrite=overwrite)


@torch.inference_mode()
def heads_in_the_wild(model: HookedModel, texts: Sequence[str], *, batch_size: int = 32,
                      n_examples: int = 5) -> WildResult:
    """Direct-effect mean ablation of every head on `texts`; categories of the tokens each head matters for."""
    if isinstance(texts, str) or not texts:
        raise InputError("texts: expected a non-empty list of strings")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    last = f"blocks.{L - 1}.hook_resid_post"
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(L)] + [last]
    runs = []  # (ids [b, p], mask [b, p], z [b, p, L, H, dh], resid [b, p, d], logits [b, p, V])
    for start in range(0, len(texts), batch_size):
        batch = model.to_tokens(list(texts[start:start + batch_size]))
        logits, cache = model.run_with_cache(batch, names=names)
        z = torch.stack([cache[f"blocks.{layer}.attn.hook_z"] for layer in range(L)], dim=2).float()
        runs.append((batch.input_ids, batch.attention_mask, z, cache[last].float(), logits.float()))
    mask_all = torch.cat([m.flatten() for _, m, *_ in runs]).bool()
    z_mean = torch.cat([z.flatten(0, 1) for _, _, z, *_ in runs])[mask_all].mean(0)  # [L, H, dh]
    W_O = model.W_O.float()  # [L, H, dh, d]
    W_U = model.W_U.float()
    counts = torch.zeros(L, H, len(CATEGORIES))
    examples: dict[tuple[int, int], list[dict[str, Any]]] = {}
    tok = model.tokenizer
    n_tokens = 0
    for ids, mask, z, resid, logits in runs:
        for b in range(ids.shape[0]):
            n = int(mask[b].sum())
            if n < 2:
                continue
            y = ids[b, 1:n]  # the next token of positions 0..n-2
            delta = torch.einsum("plhe,lhed->plhd", z[b, : n - 1] - z_mean, W_O).flatten(1, 2)  # [p, L*H, d]
            d_logits = frozen_norm_map(model.adapter.ln_final(), resid[b, : n - 1], delta) @ W_U  # [p, LH, V]
            base = logits[b, : n - 1]
            ablated = base[:, None, :] - d_logits
            loss_up = torch.logsumexp(ablated, -1) - torch.logsumexp(base, -1)[:, None] \
                - (ablated.gather(-1, y[:, None, None].expand(-1, L * H, 1)).squeeze(-1) - base.gather(-1, y[:, None]))
            best = loss_up.argmax(-1)  # [p]
            strs = [tok.decode([int(t)]) for t in ids[b, :n]]
            for p in range(n - 1):
                cat = classify(strs[: p + 1], strs[p + 1])
                layer, head = divmod(int(best[p]), H)
                counts[layer, head, CATEGORIES.index(cat)] += 1
                ex = examples.setdefault((layer, head), [])
                if cat != "other" and len(ex) < n_examples:
                    ex.append({"context": "".join(strs[: p + 1]), "next": strs[p + 1], "category": cat,
                               "loss_increase": float(loss_up[p, best[p]])})
            n_tokens += n - 1
    return WildResult(counts, n_tokens, examples)
