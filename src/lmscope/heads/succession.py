"""Successor heads (Gould, Ong, Ogden, Conmy 2023): succession scores of every head at once.

A head's OV circuit maps each task token's effective embedding to logits,
`logits[l, h, i, :] = LN1_l(emb_i) @ W_V[l, h] @ W_O[l, h] @ W_U`; a consecutive pair (item_k, item_k+1)
of a task succeeds for the head when item_k+1's logit is strictly above every other token of the same
task (and variant). A task's score is the share of its pairs that succeed ("proportion of tokens where
succession occurs", the paper's Figure 2), over both variants; the succession score is the mean of the
in-distribution tasks' scores, so every task counts once: pooled over pairs, numbers 0-199 (398 of 586
pairs with GPT-2-style tokenizers) would stand for all eight tasks. The pair-pooled share is kept beside it
(`scores_pooled`).

Choices, stated once:
- Which embedding a head reads (`mode="auto"`, the default): heads of layer 0 read the raw token embedding,
  because attention 0 runs before MLP0 (GPT-2, Llama, CRATE) or beside it (NeoX's parallel block); heads of
  later layers read MLP0's effective embedding, the paper's `MLP0(W_E)`. Scoring a layer-0 head on MLP0's
  output, as the paper's formula does for every head, scores it on an input it never sees: in zoo:gpt2-tiny
  that made a copying head (0.2) look like a 0.63 successor head, because MLP0 itself writes each item's
  successor (read straight through `W_U`, MLP0's effective embeddings already put the successor on top for
  85% of pairs). `mode="mlp0"` gives the paper's definition for every head.
- The input baseline: the same score for the identity map, i.e. each layer's input read straight through
  `W_U` (`baseline`, per layer). A head whose score does not clearly exceed its layer's baseline passes on
  succession that is already in its input (a copying head), it does not compute it.
- Effective embeddings are token-only: no positional embedding is added (a head's OV circuit does not
  depend on position, and the paper's `W_U W_OV MLP0(W_E)` has none).
- The head's own input norm (`ln_1` / `input_layernorm` of its layer) is applied to the effective
  embedding, as the head reads it in the forward pass. The final norm is not applied: the head's output
  is read straight through `W_U` (the direct path); its per-position scale cannot change an argmax.
- Each task has a leading-space variant (" Monday") and a bare one ("Monday"); pairs and the competing
  tokens stay within one variant; a bare variant identical to the spaced one is not counted twice.
- Cyclic tasks (days, months and their abbreviations) include the wrap pair (Sunday -> Monday).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmscope.data.sequences import CYCLIC_TASKS, ROMAN_NUMERALS, ROMAN_TASK, SUCCESSION_TASKS
from lmscope.errors import InputError
from lmscope.fileio import atomic_write_json
from lmscope.model.hooked import HookedModel

MODES: tuple[str, ...] = ("auto", "raw", "mlp0", "mlp0_no_ln", "mlp0_with_attn")
"""Effective-embedding modes; see `effective_embeddings` ("auto": `input_mode`)."""


@dataclass(frozen=True)
class TaskTokens:
    """One variant of one task: the single-token items kept, in task order.

    `ids [n]` token ids; `items [n]` each id's index in the task's item list; `n_items` the task's length.
    """

    task: str
    variant: str  # "space" (" Monday") or "bare" ("Monday")
    ids: Tensor
    items: Tensor
    n_items: int
    cyclic: bool

    @cached_property
    def _pairs(self) -> tuple[Tensor, Tensor]:
        return self._compute_pairs()

    def pairs(self) -> tuple[Tensor, Tensor]:
        """Local indices `(src [p], dst [p])` of consecutive kept items (the wrap pair for cyclic tasks)."""
        return self._pairs

    def _compute_pairs(self) -> tuple[Tensor, Tensor]:
        where = {int(k): i for i, k in enumerate(self.items.tolist())}
        succ = [(k + 1) % self.n_items if self.cyclic else k + 1 for k in where]
        src = [where[k] for k, s in zip(where, succ, strict=True) if s in where and s != k]
        dst = [where[s] for k, s in zip(where, succ, strict=True) if s in where and s != k]
        return torch.tensor(src, dtype=torch.long), torch.tensor(dst, dtype=torch.long)


_TASK_CACHE: dict[tuple[int, int, tuple[tuple[str, int], ...]], tuple[Any, list[TaskTokens], dict[str, int]]] = {}


def task_tokens(tokenizer: Any, tasks: dict[str, list[str]]) -> tuple[list[TaskTokens], dict[str, int]]:
    """Tokenize every task's items with and without a leading space; drop (and count) multi-token items.

    One batched tokenizer call per task variant; the result is cached per tokenizer object and task set.
    """
    key = (id(tokenizer), len(tokenizer), tuple((t, hash(tuple(w))) for t, w in tasks.items()))
    hit = _TASK_CACHE.get(key)
    if hit is not None and hit[0] is tokenizer:
        return list(hit[1]), dict(hit[2])
    out: list[TaskTokens] = []
    dropped: dict[str, int] = {}
    for task, words in tasks.items():
        dropped[task] = 0
        seen: list[list[int]] = []
        for variant, prefix in (("space", " "), ("bare", "")):
            encoded = tokenizer([prefix + word for word in words], add_special_tokens=False)["input_ids"]
            kept = [(int(toks[0]), k) for k, toks in enumerate(encoded) if len(toks) == 1]
            dropped[task] += len(words) - len(kept)
            ids = [i for i, _ in kept]
            if not ids or ids in seen:
                continue  # nothing kept, or the tokenizer does not tell this variant apart
            seen.append(ids)
            out.append(TaskTokens(task, variant, torch.tensor(ids), torch.tensor([k for _, k in kept]), len(words),
                                  task in CYCLIC_TASKS))
    _TASK_CACHE[key] = (tokenizer, out, dropped)
    return list(out), dict(dropped)


# --- effective embeddings and the OV circuit ------------------------------------------------------
def ln1(model: HookedModel, layer: int) -> nn.Module:
    """The input norm of `layer`'s attention (GPT-2 `ln_1`; NeoX and Llama `input_layernorm`)."""
    block = model.adapter.blocks()[layer]
    for name in ("ln_1", "input_layernorm"):
        if hasattr(block, name):
            return getattr(block, name)
    raise InputError(f"{model.cfg.family}: no attention input norm found in block {layer}")


def input_mode(mode: str, layer: int) -> str:
    """The concrete mode for heads of `layer`: "auto" is "raw" for layer 0 (attention 0 runs before or beside
    MLP0) and "mlp0" after it; any other mode is returned as is."""
    if mode not in MODES:
        raise InputError(f"mode: got {mode!r}, expected one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    return "raw" if layer == 0 else "mlp0"


@torch.inference_mode()
def effective_embeddings(model: HookedModel, token_ids: Tensor | Sequence[int], *, mode: str = "auto",
                         layer: int | None = None) -> Tensor:
    """Effective token embeddings `[n, d_model]` (float32) of `token_ids [n]`, with no positional embedding.

    - "auto": what reaches a head of `layer` (required): "raw" for layer 0, "mlp0" after it.
    - "raw": the rows of `W_E`.
    - "mlp0": `x + MLP0(LN2_0(x))`, `x = W_E[t]`: the residual after MLP0 with attention 0 left out.
    - "mlp0_no_ln": `x + MLP0(x)`: MLP0 applied without its LayerNorm.
    - "mlp0_with_attn": layer 0's output when the token attends only to itself: a one-token forward pass
      (positional embedding zeroed where the model has one) read at `blocks.0.hook_resid_post`.
    """
    if mode == "auto":
        if layer is None:
            raise InputError("mode 'auto' depends on the head's layer: pass layer=, or use layer_embeddings")
        mode = input_mode(mode, layer)
    elif mode not in MODES:
        raise InputError(f"mode: got {mode!r}, expected one of {', '.join(MODES)}")
    ids = torch.as_tensor(token_ids, dtype=torch.long, device=model.device).reshape(-1)
    x = model.W_E[ids]
    if mode == "raw":
        return x.float()
    if mode == "mlp0":
        return (x + model.adapter.mlp(0)(model.adapter.ln2(0)(x))).float()
    if mode == "mlp0_no_ln":
        return (x + model.adapter.mlp(0)(x)).float()
    hooks = [("hook_pos_embed", lambda t, *, hook: torch.zeros_like(t))] if "hook_pos_embed" in model.hook_names \
        else []
    _, cache = model.run_with_cache(ids[:, None], names=["blocks.0.hook_resid_post"], hooks=hooks,
                                    return_logits=False, prepend_bos=False)
    return cache["blocks.0.hook_resid_post"][:, 0].float()


def layer_embeddings(model: HookedModel, token_ids: Tensor | Sequence[int], *, mode: str = "auto") -> Tensor:
    """The effective embedding each layer's heads read, `[layer, n, d_model]` (each distinct one computed once)."""
    modes = [input_mode(mode, layer) for layer in range(model.cfg.n_layers)]
    done = {m: effective_embeddings(model, token_ids, mode=m) for m in dict.fromkeys(modes)}
    return torch.stack([done[m] for m in modes])


def head_inputs(model: HookedModel, emb: Tensor) -> Tensor:
    """`emb [n, d_model]` (or one per layer, `[layer, n, d_model]`) through each layer's attention input norm:
    `[layer, n, d_model]`."""
    with torch.inference_mode():
        return torch.stack([ln1(model, layer)((emb if emb.dim() == 2 else emb[layer]).to(model.W_E.dtype)).float()
                            for layer in range(model.cfg.n_layers)])


def ov_factors(model: HookedModel, x: Tensor, out_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Factors of the OV logits of every head: `z [layer, head, n, d_head]` and `ou [layer, head, d_head, k]`.

    `x [layer, n, d_model]` are the head inputs; `out_ids [k]` the unembedding columns kept;
    `z[l, h] @ ou[l, h]` is `x[l] @ W_V[l, h] @ W_O[l, h] @ W_U[:, out_ids]`.
    """
    W_V, W_O = model.W_V.float(), model.W_O.float()
    W_U = model.W_U.float()[:, out_ids.to(model.device)]
    z = torch.einsum("lnd,lhde->lhne", x, W_V)
    ou = torch.einsum("lhem,mk->lhek", W_O, W_U)
    return z, ou


def head_logits(model: HookedModel, layer: int, head: int, x: Tensor, out_ids: Tensor) -> Tensor:
    """OV logits `[..., k]` of one head for effective embeddings `x [..., d_model]` over `out_ids [k]`."""
    W_U = model.W_U.float()[:, out_ids.to(model.device)]
    ov = model.W_V[layer, head].float() @ model.W_O[layer, head].float()
    with torch.inference_mode():
        h = ln1(model, layer)(x.to(model.W_E.dtype)).float()
    return h @ ov @ W_U


def ov_logits(model: HookedModel, token_ids: Tensor | Sequence[int], out_ids: Tensor | Sequence[int] | None = None,
              *, mode: str = "auto") -> Tensor:
    """OV-circuit logits of every head, `[layer, head, n, k]`, for inputs `token_ids [n]` over `out_ids [k]`."""
    ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1)
    out = ids if out_ids is None else torch.as_tensor(out_ids, dtype=torch.long).reshape(-1)
    z, ou = ov_factors(model, head_inputs(model, layer_embeddings(model, ids, mode=mode)), out)
    return z @ ou


def pair_success(block: Tensor, src: Tensor, dst: Tensor) -> Tensor:
    """`block [..., n, n]` (input item, output item): whether `dst` strictly tops its row, `[..., p]` bool."""
    return strictly_top(block[..., src, :], dst)  # advanced indexing copies: the rows are ours


def strictly_top(rows: Tensor, dst: Tensor) -> Tensor:
    """Whether column `dst [..., p]` is strictly above every other column of `rows [..., p, n]`.

    Overwrites `rows` (the target's column is set to -inf to take the others' maximum): pass a copy.
    """
    where = dst.expand(*rows.shape[:-1])[..., None]
    target = rows.gather(-1, where).squeeze(-1)
    return target > rows.scatter_(-1, where, float("-inf")).amax(-1)


# --- the result -----------------------------------------------------------------------------------
@dataclass
class SuccessionResult:
    """Succession scores of every head. Arrays are `[n_layers, n_heads]`, entries in [0, 1].

    `scores`: mean over the in-distribution tasks of each task's share of succeeding pairs; `per_task`:
    those shares; `scores_pooled`: the share of succeeding pairs pooled over all in-distribution tasks;
    `n_pairs`/`dropped`: pairs scored and multi-token items dropped per task (over both variants);
    `ood`: the held-out roman numerals, not part of `scores`; `baseline*`: the same scores, per layer, for the
    identity map on that layer's input (succession already present before any head acts).
    """

    scores: Tensor
    per_task: dict[str, Tensor]
    n_pairs: dict[str, int]
    dropped: dict[str, int]
    ood: dict[str, Tensor] = field(default_factory=dict)
    mode: str = "auto"
    model: str = ""
    scores_pooled: Tensor | None = None
    baseline: Tensor | None = None
    """`[n_layers]`: the score of the identity map on the input each layer's heads read (task mean)."""
    baseline_pooled: Tensor | None = None
    baseline_per_task: dict[str, Tensor] = field(default_factory=dict)
    threshold: float = 0.4
    """Default threshold of `top_heads` and of the `top_heads` written by `to_dict`/`save`."""

    def top_heads(self, threshold: float | None = None) -> list[dict[str, Any]]:
        """Heads scoring at least `threshold`, best first: `[{"layer", "head", "score", "baseline"}]`."""
        threshold = self.threshold if threshold is None else threshold
        found = [{"layer": int(layer), "head": int(head), "score": float(self.scores[layer, head]),
                  "baseline": None if self.baseline is None else float(self.baseline[layer])}
                 for layer, head in (self.scores >= threshold).nonzero().tolist()]
        return sorted(found, key=lambda d: -d["score"])

    def best_head(self) -> tuple[int, int]:
        """`(layer, head)` with the highest score."""
        flat = int(self.scores.argmax())
        return divmod(flat, self.scores.shape[1])

    def to_dict(self, threshold: float | None = None) -> dict[str, Any]:
        """JSON-safe: arrays as [layer][head] lists."""
        return {
            "model": self.model,
            "mode": self.mode,
            "scores": self.scores.tolist(),
            "scores_pooled": None if self.scores_pooled is None else self.scores_pooled.tolist(),
            "top_heads": self.top_heads(threshold),
            "per_task": {t: s.tolist() for t, s in self.per_task.items()},
            "n_pairs": dict(self.n_pairs),
            "dropped": dict(self.dropped),
            "ood": {t: s.tolist() for t, s in self.ood.items()},
            "input_baseline": None if self.baseline is None else {
                "scores": self.baseline.tolist(),
                "scores_pooled": None if self.baseline_pooled is None else self.baseline_pooled.tolist(),
                "per_task": {t: s.tolist() for t, s in self.baseline_per_task.items()}},
        }

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write `directory/result.json` atomically."""
        return atomic_write_json(Path(directory) / "result.json", self.to_dict(), overwrite=overwrite)


def _select_tasks(tasks: Sequence[str] | None) -> dict[str, list[str]]:
    if tasks is None:
        return dict(SUCCESSION_TASKS)
    if isinstance(tasks, str) or not tasks:
        raise InputError(f"tasks: expected a non-empty list of task names, got {tasks!r}")
    unknown = [t for t in tasks if t not in SUCCESSION_TASKS]
    if unknown:
        raise InputError(f"tasks: unknown task {unknown[0]!r}; expected some of {', '.join(SUCCESSION_TASKS)}")
    return {t: SUCCESSION_TASKS[t] for t in tasks}


def _need_tokenizer(model: HookedModel) -> Any:
    if model.tokenizer is None:
        raise InputError("model: succession tasks need a tokenizer; this model was wrapped without one")
    return model.tokenizer


@dataclass(frozen=True)
class _Bucket:
    """Task variants of similar size scored as one padded batch: `index [b, n]` (positions in the unique-token
    list), `valid [b, n]`, `src_tok [b, p]` (the pairs' input tokens), `dst [b, p]`, `used [b, p]`."""

    variants: list[TaskTokens]
    index: Tensor
    valid: Tensor
    src_tok: Tensor
    dst: Tensor
    used: Tensor


@dataclass(frozen=True)
class _Plan:
    """Everything about the tasks that does not depend on the weights: cached per tokenizer and task set."""

    tasks: list[str]  # every task with a kept variant, the held-out one last
    dropped: dict[str, int]
    uniq: Tensor
    buckets: list[_Bucket]


_PLAN_CACHE: dict[tuple[int, int, tuple[str, ...]], tuple[Any, _Plan]] = {}


def _plan(tokenizer: Any, tasks: Sequence[str] | None) -> _Plan:
    key = (id(tokenizer), len(tokenizer), tuple(_select_tasks(tasks)))
    hit = _PLAN_CACHE.get(key)
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    groups, dropped = task_tokens(tokenizer, _select_tasks(tasks))
    ood_groups, _ = task_tokens(tokenizer, {ROMAN_TASK: ROMAN_NUMERALS})
    everything = groups + ood_groups
    uniq, inverse = torch.unique(torch.cat([g.ids for g in everything]), return_inverse=True)
    starts = torch.tensor([0] + [len(g.ids) for g in everything]).cumsum(0).tolist()
    by_size: dict[int, list[tuple[TaskTokens, Tensor]]] = {}  # next power of two of the variant's size
    for i, g in enumerate(everything):
        if len(g.pairs()[0]):
            size = 1 << max(len(g.ids) - 1, 1).bit_length()
            by_size.setdefault(size, []).append((g, inverse[starts[i]:starts[i + 1]]))
    buckets = [_bucket(members) for members in by_size.values()]
    plan = _Plan(list(dict.fromkeys(g.task for g in everything)), dropped, uniq, buckets)
    _PLAN_CACHE[key] = (tokenizer, plan)
    return plan


def _bucket(members: list[tuple[TaskTokens, Tensor]]) -> _Bucket:
    """Pad `(variant, its positions in the unique-token list)` pairs into one batch."""
    n, p = max(len(idx) for _, idx in members), max(len(g.pairs()[0]) for g, _ in members)
    index = torch.zeros(len(members), n, dtype=torch.long)
    valid = torch.zeros(len(members), n, dtype=torch.bool)
    src, dst = torch.zeros(len(members), p, dtype=torch.long), torch.zeros(len(members), p, dtype=torch.long)
    used = torch.zeros(len(members), p, dtype=torch.bool)
    for b, (g, idx) in enumerate(members):
        s_, d_ = g.pairs()
        index[b, :len(idx)], valid[b, :len(idx)] = idx, True
        src[b, :len(s_)], dst[b, :len(s_)], used[b, :len(s_)] = s_, d_, True
    return _Bucket([g for g, _ in members], index, valid, index.gather(1, src), dst, used)


def _bucket_hits(z: Tensor, ou: Tensor, bucket: _Bucket) -> Tensor:
    """Succeeding pairs of every head for each variant of a bucket: `[layer, head, variant]` counts.

    Variants are padded to the bucket's largest (items) and most pairs; padded logits are -inf and padded
    pairs are masked out, so the result equals scoring each variant on its own.
    """
    dev = z.device
    zs = z[:, :, bucket.src_tok.to(dev)]  # [layer, head, bucket, p, d_head]: the pairs' inputs only
    block = zs @ ou[:, :, :, bucket.index.to(dev)].permute(0, 1, 3, 2, 4)  # [layer, head, bucket, p, n]
    if not bool(bucket.valid.all()):
        block.masked_fill_(~bucket.valid.to(dev)[:, None, :], float("-inf"))
    ok = strictly_top(block, bucket.dst.to(dev).expand(*block.shape[:2], -1, -1)) & bucket.used.to(dev)
    return ok.sum(-1).float().cpu()


def succession_scores(model: HookedModel, *, mode: str = "auto", tasks: Sequence[str] | None = None,
                      ) -> SuccessionResult:
    """Succession score of every head: batched over all layers and heads (one matmul per task variant), with
    each layer's input baseline (the identity map's score) beside it."""
    plan = _plan(_need_tokenizer(model), tasks)
    uniq = plan.uniq
    emb = layer_embeddings(model, uniq, mode=mode)  # [layer, n, d_model]
    z, ou = ov_factors(model, head_inputs(model, emb), uniq)
    # the baseline: each distinct layer input read straight through W_U (one "head" per distinct input)
    modes = [input_mode(mode, layer) for layer in range(model.cfg.n_layers)]
    distinct = list(dict.fromkeys(modes))
    base_z = emb[[modes.index(m) for m in distinct]][:, None]  # [distinct, 1, n, d_model]
    base_ou = model.W_U.float()[:, uniq.to(model.device)].expand(len(distinct), 1, -1, -1)
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    tasks_all = plan.tasks
    hits: dict[str, Tensor] = {t: torch.zeros(shape) for t in tasks_all}
    base_hits: dict[str, Tensor] = {t: torch.zeros(len(distinct), 1) for t in tasks_all}
    counts: dict[str, int] = dict.fromkeys(tasks_all, 0)
    for bucket in plan.buckets:
        n_hits, n_base = _bucket_hits(z, ou, bucket), _bucket_hits(base_z, base_ou, bucket)
        for i, g in enumerate(bucket.variants):
            hits[g.task] += n_hits[..., i]
            base_hits[g.task] += n_base[..., i]
            counts[g.task] += len(g.pairs()[0])
    dropped = plan.dropped
    layer_of = torch.tensor([distinct.index(m) for m in modes])
    per_task, pooled, scores = _aggregate(hits, counts, shape)
    base_task, base_pooled, base_scores = _aggregate({t: v[layer_of, 0] for t, v in base_hits.items()}, counts,
                                                     (model.cfg.n_layers,))
    ood = {ROMAN_TASK: per_task.pop(ROMAN_TASK)} if ROMAN_TASK in per_task else {}
    base_task.pop(ROMAN_TASK, None)
    ood_pairs = counts.pop(ROMAN_TASK, 0)
    n_pairs = dict(counts) | ({f"ood:{ROMAN_TASK}": ood_pairs} if ood else {})
    return SuccessionResult(scores, per_task, n_pairs, dropped, ood, mode=mode, model=model.name,
                            scores_pooled=pooled, baseline=base_scores, baseline_pooled=base_pooled,
                            baseline_per_task=base_task)


def _aggregate(hits: dict[str, Tensor], counts: dict[str, int], shape: tuple[int, ...],
               ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Per-task shares (the OOD task included), the in-distribution pooled share and the task mean."""
    per_task = {t: hits[t] / max(counts[t], 1) for t in hits}
    in_dist = [t for t in hits if t != ROMAN_TASK]
    pooled = sum((hits[t] for t in in_dist), torch.zeros(shape)) / max(sum(counts[t] for t in in_dist), 1)
    scored = [t for t in in_dist if counts[t] > 0]
    scores = sum((per_task[t] for t in scored), torch.zeros(shape)) / max(len(scored), 1)
    return per_task, pooled, scores


def greater_than_bias(model: HookedModel, layer: int, head: int, *, mode: str = "auto",
                      tasks: Sequence[str] | None = None) -> dict[str, float]:
    """Per task, the share of (input item i, distance d >= 1) where the head favours i+d over i-d.

    For each input item i and each d with both i-d and i+d in the task (in task order, no wrap-around),
    the comparison counts as greater-than when `logit[i+d] > logit[i-d]` under the head's OV circuit.
    Comparing tokens at the same distance from the input isolates the direction of the bias from mere
    closeness (a head boosting both neighbours scores 0.5, not 1). Tasks with fewer than 3 items are left out.
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise InputError(f"head: got {layer}.{head}; the model has {n_layers} layers of {n_heads} heads")
    groups, _ = task_tokens(_need_tokenizer(model), _select_tasks(tasks))
    hits: dict[str, float] = {}
    counts: dict[str, int] = {}
    for g in groups:
        where = {int(k): i for i, k in enumerate(g.items.tolist())}
        triples = [(where[k], where[k - d], where[k + d]) for k in where
                   for d in range(1, g.n_items) if k - d in where and k + d in where]
        if not triples:
            continue
        logits = head_logits(model, layer, head, effective_embeddings(model, g.ids, mode=mode, layer=layer),
                             g.ids)  # [n, n]
        src, lo, hi = (torch.tensor(c) for c in zip(*triples, strict=True))
        hits[g.task] = hits.get(g.task, 0.0) + float((logits[src, hi] > logits[src, lo]).sum())
        counts[g.task] = counts.get(g.task, 0) + len(triples)
    return {t: hits[t] / counts[t] for t in counts}
