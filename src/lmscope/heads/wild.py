"""Successor heads in the wild (Gould et al. 2023, section 5): on running text, which head's direct effect
matters most for each next token, and what kind of token that is.

For every position, each head's direct effect is mean-ablated: its output `z @ W_O` is replaced by its
mean over the corpus and the difference is carried to the logits through the final norm frozen at the
position's scale (the head's direct path only; where the family has a norm after the attention output,
Gemma's `post_attention_layernorm`, through that one too, frozen likewise). The head whose ablation raises
the loss of the correct next token most is that token's head. The loss change is exact (a log-sum-exp over
the whole vocabulary per head and position); it is computed per layer from `z @ (W_O' W_U)`, with the final
norm's gain (and centring) folded into `W_O'` and `W_U` the model's own matrix (no copy of it), whose
`[head, d_head, d_vocab]` factor is made once per batch, so each logit costs `d_head` multiplications
instead of `d_model` (where the batch has enough positions for the factor to pay for itself; else
`(z W_O') W_U`). The factor and the effects are made a slice of the vocabulary at a time, the log-sum-exp
running over the slices, so neither is ever whole. Two passes over the texts: the first takes the mean of each
head's `z`, the second the effects (no activations are kept between batches). Memory is bounded by the batch:
the model unembeds only the positions that have a next token, and texts go in batches whose
`[positions, d_vocab]` log-probabilities fit `max_bytes`. Each token is then sorted by rule, first match wins:
- succession: the token is the successor (in a succession task, roman numerals included) of an earlier item;
- greater_than: a number greater than every earlier number of the same width ("from 1732 to 17" -> 89);
- copying: the token already occurred earlier in the text;
- acronym: an upper-case letter that starts an earlier capitalised word;
- other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lmscope.causal.engine import release_memory
from lmscope.data.sequences import ALL_TASKS, CYCLIC_TASKS
from lmscope.errors import InputError
from lmscope.heads.ov import final_norm_gain, head_W_O
from lmscope.model.hooked import HookedModel
from lmscope.model.inputs import TokenBatch
from lmscope.model.norms import frozen_divisor, norm_parts
from lmscope.results import ResultMixin

DEFAULT_MAX_BYTES = 128 * 2**20
"""A batch's `[positions, d_vocab]` float32 log-probabilities are kept under this."""

Progress = Callable[[str, int, int], None]
"""`progress(stage, i, n)`, called as batches complete."""

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
    earlier = [int(s) for s in seen if s.isdecimal() and len(s) == len(word)]
    if word.isdecimal() and earlier and int(word) > max(earlier):
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
class WildResult(ResultMixin):
    """Per head, how often it is the most important head for a next token, by category.

    `counts [layer, head, category]` (categories in `CATEGORIES`); `examples[(layer, head)]` a few cases;
    `corpus`: where the texts came from (`Corpus.to_dict()`), when the caller says.
    """

    kind: ClassVar[str] = "heads_in_the_wild"

    counts: Tensor
    n_tokens: int
    examples: dict[tuple[int, int], list[dict[str, Any]]] = field(default_factory=dict)
    corpus: dict[str, Any] | None = None

    def head_summary(self, layer: int, head: int) -> dict[str, Any]:
        c = self.counts[layer, head]
        total = int(c.sum())
        return {"layer": layer, "head": head, "tokens": total,
                "shares": {k: (float(c[i]) / total if total else 0.0) for i, k in enumerate(CATEGORIES)}}

    def category_tops(self) -> list[dict[str, Any]]:
        """Per category, the head that is most often the most important one for its tokens:
        `{"category", "n_tokens" (the category's tokens), "layer", "head", "tokens" (those it wins),
        "share"}`; layer and head are None for a category with no token."""
        out = []
        n_heads = self.counts.shape[1]
        for i, cat in enumerate(CATEGORIES):
            per_head = self.counts[..., i].flatten()
            total = int(per_head.sum())
            if total == 0:
                out.append({"category": cat, "n_tokens": 0, "layer": None, "head": None, "tokens": 0, "share": 0.0})
                continue
            flat = int(per_head.argmax())
            out.append({"category": cat, "n_tokens": total, "layer": flat // n_heads, "head": flat % n_heads,
                        "tokens": int(per_head[flat]), "share": float(per_head[flat]) / total})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"categories": list(CATEGORIES), "counts": self.counts.tolist(), "n_tokens": self.n_tokens,
                "category_tops": self.category_tops(), "corpus": self.corpus,
                "examples": {f"{layer}.{head}": ex for (layer, head), ex in self.examples.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WildResult:
        """Rebuild from `to_dict()`; the file's categories must be this version's `CATEGORIES`, in order."""
        if list(d["categories"]) != list(CATEGORIES):
            raise ValueError(f"categories: expected {list(CATEGORIES)}, got {d['categories']!r:.80}")
        counts = torch.tensor(d["counts"], dtype=torch.float32)
        if counts.ndim != 3 or counts.shape[2] != len(CATEGORIES):
            raise ValueError(f"counts: expected [layer][head][{len(CATEGORIES)} categories]")
        examples = {(int(key.split(".")[0]), int(key.split(".")[1])): list(ex) for key, ex in d["examples"].items()}
        return cls(counts, int(d["n_tokens"]), examples, d["corpus"])


def _z_names(n_layers: int) -> list[str]:
    return [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]


def _mean_z(model: HookedModel, batches: list[TokenBatch], progress: Progress | None) -> Tensor:
    """`[layer, head, d_head]` (float64): each head's mean `z` over the real tokens of every batch."""
    names = _z_names(model.cfg.n_layers)
    total, count = None, 0
    if progress is not None:
        progress("mean head outputs", 0, len(batches))
    for i, batch in enumerate(batches):
        _, cache = model.run_with_cache(batch, names=names, return_logits=False)
        mask = batch.attention_mask.bool()
        z = torch.stack([cache[n][mask] for n in names], dim=1).double()  # [tokens, layer, head, d_head]
        total = z.sum(0) if total is None else total + z.sum(0)
        count += int(mask.sum())
        if progress is not None:
            progress("mean head outputs", i + 1, len(batches))
    assert total is not None
    return total / count


def _batches(model: HookedModel, texts: Sequence[str], batch_size: int, max_bytes: int) -> list[TokenBatch]:
    """Consecutive texts, at most `batch_size` per batch and (but for a lone text) no more padded positions than
    `max_bytes` of float32 log-probabilities over the vocabulary hold."""
    lengths = model.to_tokens(list(texts)).lengths.tolist()
    cap = max(1, max_bytes // (4 * model.cfg.d_vocab))  # positions
    out, start = [], 0
    while start < len(texts):
        stop, longest = start + 1, lengths[start]
        while (stop < len(texts) and stop - start < batch_size
               and (stop - start + 1) * max(longest, lengths[stop]) <= cap):
            longest = max(longest, lengths[stop])
            stop += 1
        out.append(model.to_tokens(list(texts[start:stop])))
        start = stop
    return out


@torch.inference_mode()
def heads_in_the_wild(model: HookedModel, texts: Sequence[str], *, batch_size: int = 16, n_examples: int = 5,
                      max_elements: int = 2**23, max_bytes: int = DEFAULT_MAX_BYTES,
                      progress: Progress | None = None, corpus: dict[str, Any] | None = None) -> WildResult:
    """Direct-effect mean ablation of every head on `texts`; categories of the tokens each head matters for.

    `max_elements` bounds the `[head, positions, vocabulary slice]` effects made at once; `corpus` is recorded as
    is. Each batch makes the `[head, d_head, d_vocab]` factor of every layer once, so larger batches (more tokens
    per batch) spread that cost over more positions, at the price of their `[tokens, d_vocab]` log-probabilities
    in memory: a batch holds at most `batch_size` texts and, past one text, `max_bytes` of them. Neither
    changes the result.
    """
    if isinstance(texts, str) or not texts:
        raise InputError("texts: expected a non-empty list of strings")
    if batch_size < 1:
        raise InputError(f"batch_size: got {batch_size}, expected at least 1")
    if max_bytes < 1 or max_elements < 1:
        raise InputError(f"max_bytes/max_elements: expected positive numbers, got {max_bytes} and {max_elements}")
    if model.adapter.logit_softcap is not None:
        raise InputError(f"model: {model.name} soft-caps its logits, so a head's direct effect is not linear in "
                         "its output; heads in the wild needs a model without final logit soft-capping")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    batches = _batches(model, texts, batch_size, max_bytes)
    z_mean = _mean_z(model, batches, progress).float()
    weights = direct_weights(model)
    counts = torch.zeros(L, H, len(CATEGORIES))
    examples: dict[tuple[int, int], list[dict[str, Any]]] = {}
    n_tokens = 0
    steps = len(batches) * L
    if progress is not None:
        progress("direct effects (batch x layer)", 0, steps)
    for i, batch in enumerate(batches):
        def step(layer: int, i: int = i) -> None:
            if progress is not None:
                progress("direct effects (batch x layer)", i * L + layer + 1, steps)

        mask, loss_up = batch_losses(model, batch, z_mean, max_elements=max_elements, on_layer=step, weights=weights)
        best = loss_up.flatten(1).argmax(-1)  # [P]
        n_tokens += _tally(model, batch.input_ids, mask, best, loss_up, counts, examples, n_examples)
        release_memory()  # the batch's log-probabilities and activations go back to the OS, not to the next peak
    return WildResult(counts, n_tokens, examples, corpus)


def direct_weights(model: HookedModel) -> tuple[Tensor, Tensor]:
    """`(W_O' [layer, head, d_head, d_model], W_U [d_model, d_vocab])`: the direct path of a head's output to the
    logits through the norms frozen at a position, `dz @ W_O' @ W_U / scale`. `W_O'` carries Gemma's
    post-attention gain, then the final norm's centring (LayerNorm) and gain: `(W_O - mean_d W_O) * gain`, which
    is `W_O` times the norm's linear part, so `W_U` is the model's own (a view: the vocabulary-sized matrix is
    never copied)."""
    W_O = head_W_O(model, fold_ln=True)
    if norm_parts(model.adapter.ln_final()).centers:
        W_O = W_O - W_O.mean(-1, keepdim=True)
    return W_O * final_norm_gain(model).float().to(W_O.device), model.W_U.float()


def batch_losses(model: HookedModel, batch: TokenBatch, z_mean: Tensor, *, max_elements: int = 2**23,
                 on_layer: Callable[[int], None] | None = None,
                 weights: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """`(mask [batch, pos], loss_up [P, layer, head])`: for the P positions where `mask` is true (a real token
    followed by one), how much mean-ablating each head's direct effect (`z -> z_mean [layer, head, d_head]`)
    raises the next token's loss, through the norms frozen at the position (module docstring).
    `on_layer(layer)` is called as each layer is done; `weights` are `direct_weights(model)` (made here if None)."""
    L = model.cfg.n_layers
    W_O, W_U = weights if weights is not None else direct_weights(model)
    raw_W_O = model.W_O.float()
    post = [model.adapter.attn_post_norm(layer) for layer in range(L)]
    names = [*_z_names(L), f"blocks.{L - 1}.hook_resid_post"]
    mask = batch.attention_mask.bool().clone()
    mask[:, -1] = False  # the last position has no next token
    mask[:, :-1] &= batch.attention_mask[:, 1:].bool()
    y = batch.input_ids[:, 1:][mask[:, :-1]]  # [P]: the next token of each kept position
    if not len(y):  # one-token texts only: nothing to predict
        for layer in range(L):
            if on_layer is not None:
                on_layer(layer)
        return mask, torch.empty(0, L, model.cfg.n_heads)

    def kept(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0][mask][None], *args[1:])  # unembed only the P kept positions: logits [1, P, V]

    handle = model.adapter.unembed().register_forward_pre_hook(kept)
    try:
        logits, cache = model.run_with_cache(batch, names=names)
    finally:
        handle.remove()
    assert logits is not None
    logp = logits[0].float()  # [P, V]; the log-softmax made in place
    del logits
    logp.sub_(logp.logsumexp(-1, keepdim=True))
    final_div = frozen_divisor(model.adapter.ln_final(), cache[names[-1]][mask].float())  # [P]
    loss_up = torch.empty(len(y), L, model.cfg.n_heads)
    for layer in range(L):
        z = cache.pop(names[layer])[mask].float()  # [P, H, dh]
        scale = final_div
        if post[layer] is not None:  # Gemma: the post-attention norm's scale at this position, frozen
            scale = scale * frozen_divisor(post[layer], torch.einsum("phe,hed->pd", z, raw_W_O[layer]))
        dz = (z - z_mean[layer]) / scale[:, None, None]
        loss_up[:, layer] = _loss_increase(dz, W_O[layer], W_U, logp, y, max_elements)
        if on_layer is not None:
            on_layer(layer)
    return mask, loss_up


def _loss_increase(dz: Tensor, W_O: Tensor, W_U: Tensor, logp: Tensor, y: Tensor, max_elements: int) -> Tensor:
    """`[P, H]`: next-token loss increase when each head's direct effect `d = dz [P, H, dh] @ W_O [H, dh, d] @ W_U`
    is removed from logits whose log-softmax is `logp [P, V]`: `LSE(base - d) - LSE(base) + d[y]`, i.e.
    `LSE(logp - d) + d[y]`.

    `d` comes from `dz @ (W_O @ W_U)` when the `[H, dh, V]` factor pays for itself over the P positions
    (`P (d_model - d_head) > d_head d_model`), else from `(dz @ W_O) @ W_U`. Both go a slice of the vocabulary
    at a time (the factor's slice made once, used for every position), the log-sum-exp carried across slices
    as a running maximum and sum; the `[H, chunk, slice]` effects go into one reused buffer and become the
    exponentials in place (a fresh tensor of that size per chunk costs more in page faults than the exponentials).
    """
    n_heads, d_head, d_model = W_O.shape
    n_pos, vocab = dz.shape[0], W_U.shape[1]
    factored = n_pos * (d_model - d_head) > d_head * d_model
    v_step = max(1, min(vocab, max_elements // (n_heads * d_head)))
    chunk = max(1, min(n_pos, max_elements // (n_heads * v_step)))
    zt = dz.transpose(0, 1)  # [H, P, dh]
    zo = None if factored else zt @ W_O  # [H, P, d]
    buffer = torch.empty(n_heads * chunk * v_step, dtype=W_U.dtype, device=W_U.device)
    top = torch.full((n_heads, n_pos), -torch.inf)
    total = torch.zeros(n_heads, n_pos)
    target = torch.zeros(n_heads, n_pos)
    for v0 in range(0, vocab, v_step):
        v1 = min(v0 + v_step, vocab)
        W_slice = W_U[:, v0:v1]
        ou = W_O @ W_slice if factored else None  # [H, dh, slice]
        for start in range(0, n_pos, chunk):
            stop = min(start + chunk, n_pos)
            into = buffer[: n_heads * (stop - start) * (v1 - v0)].view(n_heads, stop - start, v1 - v0)
            d = (torch.matmul(zt[:, start:stop], ou, out=into) if ou is not None
                 else torch.matmul(zo[:, start:stop], W_slice, out=into))  # type: ignore[index]
            here = ((y[start:stop] >= v0) & (y[start:stop] < v1)).nonzero().flatten()
            if len(here):
                target[:, start + here] = d[:, here, y[start + here] - v0]
            a = torch.sub(logp[start:stop, v0:v1][None], d, out=d)  # log p - d, in place
            new_top = torch.maximum(top[:, start:stop], a.amax(-1))
            total[:, start:stop] = (total[:, start:stop] * (top[:, start:stop] - new_top).exp()
                                    + a.sub_(new_top[..., None]).exp_().sum(-1))
            top[:, start:stop] = new_top
    return (total.log() + top + target).T


def _tally(model: HookedModel, ids: Tensor, mask: Tensor, best: Tensor, loss_up: Tensor, counts: Tensor,
           examples: dict[tuple[int, int], list[dict[str, Any]]], n_examples: int) -> int:
    """Add one batch's winners to `counts` and `examples`; returns the number of tokens counted."""
    tok = model.tokenizer
    n_heads = counts.shape[1]
    k = 0
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        if n == 0:
            continue
        strs = [tok.decode([int(t)]) for t in ids[b, : n + 1]]
        for p in range(n):
            cat = classify(strs[: p + 1], strs[p + 1])
            win = int(best[k])
            layer, head = divmod(win, n_heads)
            counts[layer, head, CATEGORIES.index(cat)] += 1
            ex = examples.setdefault((layer, head), [])
            if cat != "other" and len(ex) < n_examples:
                ex.append({"context": "".join(strs[: p + 1]), "next": strs[p + 1], "category": cat,
                           "loss_increase": float(loss_up[k].flatten()[win])})
            k += 1
    return k
