"""Successor heads (Gould, Ong, Ogden, Conmy 2023): succession scores of every head at once.

A head's OV circuit maps each task token's effective embedding to logits,
`logits[l, h, i, :] = LN1_l(emb_i) @ W_V[l, h] @ W_O[l, h] @ W_U` (read through the final norm by default:
`lmscope.heads.ov`); a consecutive pair (item_k, item_k+1) of a task succeeds for the head when item_k+1's
logit is strictly above every other token of the same task (and variant). A task's score is the share of its
pairs that succeed ("proportion of tokens where succession occurs", the paper's Figure 2), over both
variants; the succession score is the mean of the in-distribution tasks' scores, so every task counts once:
pooled over pairs, numbers 0-199 (398 of 586 pairs with GPT-2-style tokenizers) would stand for all eight
tasks. The pair-pooled share is kept beside it (`scores_pooled`).

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
- The head's own input norm is applied to the effective embedding, as the head reads it in the forward
  pass. With `fold_ln=True` (the default, as TransformerLens) `W_U` is read through the final norm's gain
  (and centring, for LayerNorm): see `lmscope.heads.ov`; `fold_ln=False` reads the raw `W_U`.
- Each task has a leading-space variant (" Monday") and a bare one ("Monday"); pairs and the competing
  tokens stay within one variant; a bare variant identical to the spaced one is not counted twice.
- Items that are not one token are dropped and counted (`dropped`, over both variants), and so are items
  the tokenizer maps to its unknown token (word-level tokenizers), counted also in `unknown`: scoring them
  would score the unknown token's embedding under the item's name.
- A task with fewer than `min_pairs` pairs (default `MIN_PAIRS` = 10: below that one pair moves the task's
  score by more than 0.1) is too thin to mean anything: it keeps its per-task score but is left out of the
  headline `scores` and `scores_pooled` (and so of `best_head` and `top_heads`); `thin_tasks` lists it. A
  digit-split tokenizer (only 0-9 are one token) leaves "numbers" with 9 pairs, for example. When no task
  has enough pairs, the headline falls back to every task with a pair and `headline_is_thin` says so.
- Cyclic tasks (days, months and their abbreviations) include the wrap pair (Sunday -> Monday).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import Tensor

from lmscope.data.sequences import CYCLIC_TASKS, ROMAN_NUMERALS, ROMAN_TASK, SUCCESSION_TASKS
from lmscope.errors import InputError
from lmscope.heads.ov import (
    MODES,
    effective_embeddings,
    head_inputs,
    head_logits,
    input_mode,
    layer_embeddings,
    ov_factors,
    ov_logits,
    unembedding,
)
from lmscope.model.hooked import HookedModel
from lmscope.results import ResultMixin, numbers

__all__ = [  # the OV helpers are re-exported: callers (circuits, tests) import them from here
    "MIN_PAIRS", "MODES", "SuccessionResult", "TaskTokens", "effective_embeddings", "greater_than_bias",
    "head_inputs", "head_logits", "input_mode", "layer_embeddings", "ov_factors", "ov_logits",
    "pair_success", "strictly_top", "succession_scores", "task_tokens", "unembedding",
]

MIN_PAIRS = 10
"""Tasks with fewer pairs are left out of the headline score (see the module docstring)."""


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


@dataclass(frozen=True)
class TaskDrops:
    """Per task, over both variants: items tried (`tried`), dropped in all (`dropped`), of which mapped to
    the unknown token (`unknown`); the rest of the drops are items of several tokens."""

    tried: dict[str, int]
    dropped: dict[str, int]
    unknown: dict[str, int]


_TASK_CACHE: dict[tuple[int, int, tuple[tuple[str, int], ...]], tuple[Any, list[TaskTokens], TaskDrops]] = {}


def _unknown_id(tokenizer: Any) -> int | None:
    unk = getattr(tokenizer, "unk_token_id", None)
    return unk if isinstance(unk, int) else None


def tokenize_tasks(tokenizer: Any, tasks: dict[str, list[str]]) -> tuple[list[TaskTokens], TaskDrops]:
    """Tokenize every task's items with and without a leading space; drop (and count) items of several tokens
    and items that map to the unknown token (unless the item is the unknown token's own text).

    One batched tokenizer call per task variant; the result is cached per tokenizer object and task set.
    """
    key = (id(tokenizer), len(tokenizer), tuple((t, hash(tuple(w))) for t, w in tasks.items()))
    hit = _TASK_CACHE.get(key)
    if hit is not None and hit[0] is tokenizer:
        return list(hit[1]), hit[2]
    unk, unk_text = _unknown_id(tokenizer), getattr(tokenizer, "unk_token", None)
    out: list[TaskTokens] = []
    drops = TaskDrops({}, {}, {})
    for task, words in tasks.items():
        drops.tried[task], drops.dropped[task], drops.unknown[task] = 2 * len(words), 0, 0
        seen: list[list[int]] = []
        for variant, prefix in (("space", " "), ("bare", "")):
            encoded = tokenizer([prefix + word for word in words], add_special_tokens=False)["input_ids"]
            unknown = [unk is not None and unk in toks and word.strip() != unk_text
                       for word, toks in zip(words, encoded, strict=True)]
            kept = [(int(toks[0]), k) for k, toks in enumerate(encoded) if len(toks) == 1 and not unknown[k]]
            drops.dropped[task] += len(words) - len(kept)
            drops.unknown[task] += sum(unknown)
            ids = [i for i, _ in kept]
            if not ids or ids in seen:
                continue  # nothing kept, or the tokenizer does not tell this variant apart
            seen.append(ids)
            out.append(TaskTokens(task, variant, torch.tensor(ids), torch.tensor([k for _, k in kept]), len(words),
                                  task in CYCLIC_TASKS))
    _TASK_CACHE[key] = (tokenizer, out, drops)
    return list(out), drops


def task_tokens(tokenizer: Any, tasks: dict[str, list[str]]) -> tuple[list[TaskTokens], dict[str, int]]:
    """`tokenize_tasks` with only the dropped counts (multi-token and unknown items together), per task."""
    groups, drops = tokenize_tasks(tokenizer, tasks)
    return groups, dict(drops.dropped)


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
class SuccessionResult(ResultMixin):
    """Succession scores of every head. Arrays are `[n_layers, n_heads]`, entries in [0, 1].

    `scores`: mean over the headline tasks (`headline_tasks`: the in-distribution tasks with at least
    `min_pairs` pairs) of each task's share of succeeding pairs; `per_task`: those shares for every task with
    a pair; `scores_pooled`: the share of succeeding pairs pooled over the headline tasks; `n_pairs`: pairs
    scored per task (every task asked for, 0 when none); `tried`/`dropped`/`unknown`: items tried, dropped,
    and dropped as unknown tokens per task (over both variants); `ood`: the held-out roman numerals, not part
    of `scores`; `baseline*`: the same scores, per layer, for the identity map on that layer's input
    (succession already present before any head acts).
    """

    kind: ClassVar[str] = "succession"
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
    unknown: dict[str, int] = field(default_factory=dict)
    tried: dict[str, int] = field(default_factory=dict)
    min_pairs: int = MIN_PAIRS
    headline_tasks: list[str] = field(default_factory=list)
    fold_ln: bool = True

    @property
    def tasks(self) -> list[str]:
        """The in-distribution tasks asked for (with or without pairs)."""
        return [t for t in self.n_pairs if not t.startswith("ood:")]

    @property
    def thin_tasks(self) -> list[str]:
        """In-distribution tasks with fewer than `min_pairs` pairs (none at all included)."""
        return [t for t in self.tasks if self.n_pairs[t] < self.min_pairs]

    @property
    def headline_is_thin(self) -> bool:
        """True when no task had `min_pairs` pairs, so the headline rests on thin tasks."""
        return any(t in self.thin_tasks for t in self.headline_tasks)

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
            "fold_ln": self.fold_ln,
            "scores": self.scores.tolist(),
            "scores_pooled": None if self.scores_pooled is None else self.scores_pooled.tolist(),
            "top_heads": self.top_heads(threshold),
            "per_task": {t: s.tolist() for t, s in self.per_task.items()},
            "n_pairs": dict(self.n_pairs),
            "tried": dict(self.tried),
            "dropped": dict(self.dropped),
            "unknown": dict(self.unknown),
            "min_pairs": self.min_pairs,
            "headline_tasks": list(self.headline_tasks),
            "thin_tasks": self.thin_tasks,
            "headline_is_thin": self.headline_is_thin,
            "ood": {t: s.tolist() for t, s in self.ood.items()},
            "input_baseline": None if self.baseline is None else {
                "scores": self.baseline.tolist(),
                "scores_pooled": None if self.baseline_pooled is None else self.baseline_pooled.tolist(),
                "per_task": {t: s.tolist() for t, s in self.baseline_per_task.items()}},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SuccessionResult:
        """The result back from its result.json (NaN scores were written as null)."""
        def t(x: Any) -> Tensor | None:
            return None if x is None else torch.tensor(numbers(x), dtype=torch.float32)

        def ts(m: dict[str, Any]) -> dict[str, Tensor]:
            return {k: torch.tensor(numbers(v), dtype=torch.float32) for k, v in m.items()}

        base = d.get("input_baseline") or {}
        return cls(torch.tensor(numbers(d["scores"]), dtype=torch.float32), ts(d["per_task"]), dict(d["n_pairs"]),
                   dict(d["dropped"]), ts(d["ood"]), str(d["mode"]), str(d["model"]), t(d["scores_pooled"]),
                   t(base.get("scores")), t(base.get("scores_pooled")), ts(base.get("per_task") or {}),
                   unknown=dict(d["unknown"]), tried=dict(d["tried"]), min_pairs=int(d["min_pairs"]),
                   headline_tasks=list(d["headline_tasks"]), fold_ln=bool(d["fold_ln"]))


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

    tasks: list[str]  # every task asked for, the held-out one last
    drops: TaskDrops
    uniq: Tensor
    buckets: list[_Bucket]


_PLAN_CACHE: dict[tuple[int, int, tuple[str, ...]], tuple[Any, _Plan]] = {}


def _plan(tokenizer: Any, tasks: Sequence[str] | None) -> _Plan:
    key = (id(tokenizer), len(tokenizer), tuple(_select_tasks(tasks)))
    hit = _PLAN_CACHE.get(key)
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    selected = _select_tasks(tasks)
    groups, drops = tokenize_tasks(tokenizer, selected)
    ood_groups, _ = tokenize_tasks(tokenizer, {ROMAN_TASK: ROMAN_NUMERALS})
    everything = groups + ood_groups
    if not groups:
        raise InputError(f"tasks: no item of {', '.join(selected)} is a single token of this tokenizer "
                         f"({sum(drops.unknown.values())} map to its unknown token)")
    uniq, inverse = torch.unique(torch.cat([g.ids for g in everything]), return_inverse=True)
    starts = torch.tensor([0] + [len(g.ids) for g in everything]).cumsum(0).tolist()
    by_size: dict[int, list[tuple[TaskTokens, Tensor]]] = {}  # next power of two of the variant's size
    for i, g in enumerate(everything):
        if len(g.pairs()[0]):
            size = 1 << max(len(g.ids) - 1, 1).bit_length()
            by_size.setdefault(size, []).append((g, inverse[starts[i]:starts[i + 1]]))
    buckets = [_bucket(members) for members in by_size.values()]
    plan = _Plan([*selected, *(g.task for g in ood_groups[:1])], drops, uniq, buckets)
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
                      fold_ln: bool = True, min_pairs: int = MIN_PAIRS) -> SuccessionResult:
    """Succession score of every head: batched over all layers and heads (one matmul per bucket of task
    variants), with each layer's input baseline (the identity map's score) beside it.

    `fold_ln`: read `W_U` through the final norm (`lmscope.heads.ov`); `min_pairs`: tasks with fewer pairs
    are left out of the headline scores (module docstring)."""
    if min_pairs < 1:
        raise InputError(f"min_pairs: got {min_pairs}, expected at least 1")
    plan = _plan(_need_tokenizer(model), tasks)
    uniq = plan.uniq
    emb = layer_embeddings(model, uniq, mode=mode)  # [layer, n, d_model]
    z, ou = ov_factors(model, head_inputs(model, emb), uniq, fold_ln=fold_ln)
    # the baseline: each distinct layer input read straight through W_U (one "head" per distinct input)
    modes = [input_mode(mode, layer) for layer in range(model.cfg.n_layers)]
    distinct = list(dict.fromkeys(modes))
    base_z = emb[[modes.index(m) for m in distinct]][:, None]  # [distinct, 1, n, d_model]
    base_ou = unembedding(model, uniq, fold_ln=fold_ln).expand(len(distinct), 1, -1, -1)
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    hits: dict[str, Tensor] = {t: torch.zeros(shape) for t in plan.tasks}
    base_hits: dict[str, Tensor] = {t: torch.zeros(len(distinct), 1) for t in plan.tasks}
    counts: dict[str, int] = dict.fromkeys(plan.tasks, 0)
    for bucket in plan.buckets:
        n_hits, n_base = _bucket_hits(z, ou, bucket), _bucket_hits(base_z, base_ou, bucket)
        for i, g in enumerate(bucket.variants):
            hits[g.task] += n_hits[..., i]
            base_hits[g.task] += n_base[..., i]
            counts[g.task] += len(g.pairs()[0])
    headline = [t for t in plan.tasks if t != ROMAN_TASK and counts[t] >= min_pairs] \
        or [t for t in plan.tasks if t != ROMAN_TASK and counts[t] > 0]
    layer_of = torch.tensor([distinct.index(m) for m in modes])
    per_task, pooled, scores = _aggregate(hits, counts, headline, shape)
    base_task, base_pooled, base_scores = _aggregate({t: v[layer_of, 0] for t, v in base_hits.items()}, counts,
                                                     headline, (model.cfg.n_layers,))
    ood = {ROMAN_TASK: per_task.pop(ROMAN_TASK)} if ROMAN_TASK in per_task else {}
    base_task.pop(ROMAN_TASK, None)
    ood_pairs = counts.pop(ROMAN_TASK, 0)
    n_pairs = dict(counts) | ({f"ood:{ROMAN_TASK}": ood_pairs} if ood else {})
    drops = plan.drops
    return SuccessionResult(scores, per_task, n_pairs, dict(drops.dropped), ood, mode=mode, model=model.name,
                            scores_pooled=pooled, baseline=base_scores, baseline_pooled=base_pooled,
                            baseline_per_task=base_task, unknown=dict(drops.unknown), tried=dict(drops.tried),
                            min_pairs=min_pairs, headline_tasks=headline, fold_ln=fold_ln)


def _aggregate(hits: dict[str, Tensor], counts: dict[str, int], headline: list[str], shape: tuple[int, ...],
               ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Per-task shares (every task with a pair, the OOD task included), and the pooled share and task mean
    over the headline tasks."""
    per_task = {t: hits[t] / counts[t] for t in hits if counts[t] > 0}
    pooled = sum((hits[t] for t in headline), torch.zeros(shape)) / max(sum(counts[t] for t in headline), 1)
    scores = sum((per_task[t] for t in headline), torch.zeros(shape)) / max(len(headline), 1)
    return per_task, pooled, scores


def greater_than_bias(model: HookedModel, layer: int, head: int, *, mode: str = "auto",
                      tasks: Sequence[str] | None = None, fold_ln: bool = True) -> dict[str, float]:
    """Per task, the share of (input item i, distance d >= 1) where the head favours i+d over i-d.

    For each input item i and each d with both i-d and i+d in the task (in task order, no wrap-around),
    the comparison counts as greater-than when `logit[i+d] > logit[i-d]` under the head's OV circuit.
    Comparing tokens at the same distance from the input isolates the direction of the bias from mere
    closeness (a head boosting both neighbours scores 0.5, not 1). Tasks with fewer than 3 items are left out.
    `fold_ln`: as in `succession_scores`.
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
                             g.ids, fold_ln=fold_ln)  # [n, n]
        src, lo, hi = (torch.tensor(c) for c in zip(*triples, strict=True))
        hits[g.task] = hits.get(g.task, 0.0) + float((logits[src, hi] > logits[src, lo]).sum())
        counts[g.task] = counts.get(g.task, 0) + len(triples)
    return {t: hits[t] / counts[t] for t in counts}
