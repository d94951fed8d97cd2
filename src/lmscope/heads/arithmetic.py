"""Vector arithmetic with mod-10 features (Gould et al. 2023, section 4.2): edit an item's effective
embedding from residue i to residue j and check that a successor head now outputs the successor of the
edited value.

Each item has a value: numbers and number words their number; ordinals, days, months and letters their
1-based position (first = 1, January = 1, A = 1). Editing item v with v mod 10 = i to residue j means
`x' = x - k*f_i + k*f_j`, where `f_r` is residue r's feature (unit decoder direction times its typical size
in the class); the edit succeeds when the head's top logit among the task's tokens (same variant) is the
successor of `v - i + j` (wrapping for cyclic tasks). Edits whose new value or its successor is not a
kept single-token item are skipped. `k` is chosen from a grid to maximise the success rate over all edits,
and the rate at every k is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from lmscope.errors import InputError
from lmscope.heads.mod10 import N_RESIDUES, Mod10Result, check_head, head_logits
from lmscope.heads.succession import _need_tokenizer, _select_tasks, effective_embeddings, input_mode, task_tokens
from lmscope.model.hooked import HookedModel
from lmscope.results import ResultMixin, number

ONE_BASED: frozenset[str] = frozenset({"ordinals", "days", "day_abbrevs", "months", "month_abbrevs", "letters"})
"""Tasks whose item values start at 1 (first, Monday, January, A); numbers and number words start at 0."""
DEFAULT_KS: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0)


@dataclass
class ArithmeticResult(ResultMixin):
    """Success rates of mod-10 edits through one head: `rates[task]` at the chosen `k`, `by_k[k][task]`."""

    kind: ClassVar[str] = "vector_arithmetic"

    layer: int
    head: int
    k: float
    rates: dict[str, float]
    n_edits: dict[str, int]
    by_k: dict[float, dict[str, float]]
    overall: float
    pairs: list[tuple[int, int]]
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"head": {"layer": self.layer, "head": self.head}, "k": self.k, "overall": self.overall,
                "rates": self.rates, "n_edits": self.n_edits,
                "by_k": {str(k): v for k, v in self.by_k.items()}, "pairs": [list(p) for p in self.pairs],
                "examples": self.examples}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArithmeticResult:
        return cls(int(d["head"]["layer"]), int(d["head"]["head"]), float(d["k"]),
                   {str(t): number(v) for t, v in d["rates"].items()},
                   {str(t): int(v) for t, v in d["n_edits"].items()},
                   {float(k): {str(t): number(v) for t, v in r.items()} for k, r in d["by_k"].items()},
                   number(d["overall"]), [(int(i), int(j)) for i, j in d["pairs"]], list(d["examples"]))


def residue_pairs(from_residue: int | None, to_residue: int | None) -> list[tuple[int, int]]:
    """The (i, j) residue edits asked for: the one pair `from -> to`, or all 90 when neither is given."""
    for name, r in (("from_residue", from_residue), ("to_residue", to_residue)):
        if r is not None and not (0 <= r < N_RESIDUES):
            raise InputError(f"{name}: got {r}, expected a residue 0-9", arg=name)
    if (from_residue is None) != (to_residue is None):
        missing = "to_residue" if to_residue is None else "from_residue"
        raise InputError(f"{missing}: expected a residue 0-9, got None; give both residues, or neither for every "
                         "pair", arg=missing)
    if from_residue is not None and to_residue is not None:
        if from_residue == to_residue:
            raise InputError(f"to_residue: got {to_residue}, the residue the edit starts from; an edit needs two "
                             "different residues", arg="to_residue")
        return [(from_residue, to_residue)]
    return [(i, j) for i in range(N_RESIDUES) for j in range(N_RESIDUES) if i != j]


def _edits(values: list[int], n_items: int, cyclic: bool, offset: int, pairs: list[tuple[int, int]],
           kept: dict[int, int]) -> list[tuple[int, int, int, int]]:
    """(local source index, i, j, local target index) for every valid edit of one task variant."""
    out = []
    for local, v in enumerate(values):
        for i, j in pairs:
            if v % N_RESIDUES != i:
                continue
            new = v - i + j
            succ = new + 1
            if cyclic:
                succ = (succ - offset) % n_items + offset
            if not (offset <= new < n_items + offset) or succ not in kept:
                continue
            out.append((local, i, j, kept[succ]))
    return out


def vector_arithmetic(model: HookedModel, mod10: Mod10Result, *, layer: int | None = None,
                      head: int | None = None, from_residue: int | None = None, to_residue: int | None = None,
                      ks: Sequence[float] = DEFAULT_KS, tasks: Sequence[str] | None = None,
                      mode: str = "auto", n_examples: int = 8, fold_ln: bool | None = None) -> ArithmeticResult:
    """Success rate per task of the edits `from_residue -> to_residue` (all pairs if neither is given).

    `fold_ln`: read the head's output through the final norm (`lmscope.heads.ov`); None: as `mod10` was found.
    """
    fold = bool(mod10.settings.get("fold_ln", True)) if fold_ln is None else fold_ln
    layer = mod10.layer if layer is None else layer
    head = mod10.head if head is None else head
    check_head(model, layer, head)
    mode = input_mode(mode, layer)  # the embedding this head reads
    if not ks or any(k <= 0 for k in ks):
        raise InputError(f"ks: got {list(ks)}, expected positive multipliers")
    pairs = residue_pairs(from_residue, to_residue)
    groups, _ = task_tokens(_need_tokenizer(model), _select_tasks(tasks))
    feats = mod10.directions * mod10.scales[:, None]  # [10, d]
    hits: dict[float, dict[str, float]] = {k: {} for k in ks}
    counts: dict[str, int] = {}
    outcomes: dict[float, list[tuple[Any, Tensor, Tensor, Tensor, Tensor, Tensor]]] = {k: [] for k in ks}
    for g in groups:
        offset = 1 if g.task in ONE_BASED else 0
        values = [int(v) + offset for v in g.items.tolist()]
        kept = {v: local for local, v in enumerate(values)}
        edits = _edits(values, g.n_items, g.cyclic, offset, pairs, kept)
        if not edits:
            continue
        src, i, j, dst = (torch.tensor(c) for c in zip(*edits, strict=True))
        x = effective_embeddings(model, g.ids, mode=mode)[src]  # [e, d]
        counts[g.task] = counts.get(g.task, 0) + len(edits)
        for k in ks:
            top = head_logits(model, layer, head, x - k * feats[i] + k * feats[j], g.ids, fold_ln=fold).argmax(-1)
            hits[k][g.task] = hits[k].get(g.task, 0.0) + float((top == dst).sum())
            outcomes[k].append((g, src, i, j, dst, top))
    if not counts:
        raise InputError("tasks: no valid edit (no task item has the residue to edit and a successor after it)")
    by_k = {k: {t: hits[k].get(t, 0.0) / counts[t] for t in counts} for k in ks}
    overall = {k: sum(hits[k].values()) / sum(counts.values()) for k in ks}
    best_k = max(ks, key=lambda k: overall[k])
    examples = [_example(model, *o) for o in outcomes[best_k][:n_examples]]
    return ArithmeticResult(layer, head, float(best_k), by_k[best_k], counts, by_k, overall[best_k], pairs,
                            examples)


def _example(model: HookedModel, g: Any, src: Tensor, i: Tensor, j: Tensor, dst: Tensor, top: Tensor,
             ) -> dict[str, Any]:
    """The first edit of one task variant, readable."""
    tok = _need_tokenizer(model)
    word = lambda local: tok.decode([int(g.ids[local])])  # noqa: E731
    return {"task": g.task, "variant": g.variant, "token": word(src[0]), "from": int(i[0]), "to": int(j[0]),
            "expected": word(dst[0]), "top": word(top[0]), "ok": bool(top[0] == dst[0])}
