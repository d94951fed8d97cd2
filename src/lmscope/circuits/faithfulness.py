"""How faithful is a circuit graph? circuit-tracer's replacement and completeness scores on the graph lmscope
built, and the fraction of the target its features recover on the traced prompt and on held-out prompts.

**Graph scores** (Ameisen et al. 2025, "Circuit Tracing"; implemented as circuit-tracer's
`compute_graph_scores`, `circuit_tracer/graph.py`). Let `A[i, j]` be the direct effect of node j on node i
and `N = |A|` with each row divided by its sum (a row of zeros stays zero). With `w` the output weights
(1 on the target, 0 elsewhere: lmscope traces one target, circuit-tracer weights its logits by probability),
the influence of every node is `I = w (N + N² + N³ + ...)`. Then

    replacement  = I(tokens) / (I(tokens) + I(errors))
    completeness = Σ_i (1 − Σ_{e ∈ errors} N[i, e]) (I_i + w_i) / Σ_i (I_i + w_i)

the share of the influence reaching the inputs that comes from token embeddings rather than error nodes,
and the influence-weighted share of every node's inputs that is not an error node. As in circuit-tracer the
second sum runs over every node, so nodes without inputs (tokens, errors) count with a fraction of 1: a
target fed by error nodes alone scores `(0 · 1 + 1 · 1) / 2 = 0.5`, not 0.

On lmscope's graph (`CircuitGraph`): its edges carry contributions to the target, but the edges into one
node are its direct inputs times one common factor, so row normalisation gives the same `N`. Tokens are
`embed` nodes; errors are `error` (transcoder error), `mlp` (an MLP without a transcoder: all of it is
error) and `skip` (a linear term the graph does not trace through). Constant terms (`*_bias` nodes) are
not inputs, as circuit-tracer's adjacency has no bias nodes. Heads are ordinary nodes (circuit-tracer
folds frozen attention into its edges instead; with one head per route the two agree). Two variants:

- `replacement`, `completeness`: the graph as shown, `rest` nodes (what pruning folded away) removed, as
  Neuronpedia scores a pinned subgraph by dropping the features left out;
- `*_strict`: `rest` counted as an error node, and `replacement_strict` the share of all influence
  that ends at tokens (over every node without inputs: tokens, errors, rests, and features or heads the
  search did not expand), so a graph is only credited for what it shows all the way down to the tokens.

**Fraction recovered** (`check.recovery`): the target with only the graph's features spliced in, every
other feature zero and transcoder errors frozen, as `(circuit − none) / (clean − none)`, live and with
norm scales and attention patterns frozen (the attribution frame). `heldout_recovery` applies it to
prompts the search never saw: each feature `(layer, f, p)` moves with the target position
(`p − q + q'`, q and q' the target positions of the traced and the held-out prompt); those that fall
outside the held-out prompt are dropped and counted. A graph whose median fraction recovered is under
one half, in either frame, is labelled so (`UNDER_HALF`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from lmscope.circuits.check import recovery_batch
from lmscope.circuits.graph import CircuitGraph
from lmscope.circuits.targets import Target
from lmscope.dictionary.modules import Dictionary
from lmscope.model.hooked import HookedModel

TOKEN_KINDS = frozenset({"embed"})
ERROR_KINDS = frozenset({"error", "mlp", "skip"})
CONSTANT_KINDS = frozenset({"dict_bias", "attn_bias", "enc_bias", "target_bias"})
UNDER_HALF = "recovers under half of the target"


@dataclass(frozen=True)
class GraphScores:
    """circuit-tracer's replacement and completeness scores of a graph (see the module docstring); `None` where
    the denominator is zero (no influence reaches a token or an error). `sources`: the share of the target's
    influence ending at each kind of input in the strict variant (tokens, errors, rest, unexpanded; sums to 1)."""

    replacement: float | None
    completeness: float | None
    replacement_strict: float | None
    completeness_strict: float | None
    sources: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _normalized(graph: CircuitGraph, keep_rest: bool) -> tuple[list[str], torch.Tensor]:
    """The graph's non-constant node ids (without `rest` unless `keep_rest`) and `N`, |A| row-normalised."""
    ids = [i for i, n in graph.nodes.items()
           if n["kind"] not in CONSTANT_KINDS and (keep_rest or n["kind"] != "rest")]
    index = {node_id: k for k, node_id in enumerate(ids)}
    A = torch.zeros(len(ids), len(ids), dtype=torch.float64)
    for (child, parent), v in graph.edges.items():
        if child in index and parent in index:
            A[index[parent], index[child]] = abs(v)
    return ids, A / A.sum(1, keepdim=True).clamp_min(1e-10)


def influence(N: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """`w (N + N² + ...)`: a graph's edges go strictly down its layers, so the series ends after its depth."""
    current, total = w @ N, torch.zeros_like(w)
    for _ in range(N.shape[0] + 1):
        if not bool(current.any()):
            return total
        total += current
        current = current @ N
    raise RuntimeError("influence: the graph has a cycle")  # a CircuitGraph never does


def _scores(graph: CircuitGraph, strict: bool) -> tuple[float | None, float | None, dict[str, float]]:
    ids, N = _normalized(graph, keep_rest=strict)
    kinds = [graph.nodes[i]["kind"] for i in ids]
    w = torch.zeros(len(ids), dtype=torch.float64)
    if graph.target in ids:
        w[ids.index(graph.target)] = 1.0
    infl = influence(N, w)
    is_token = torch.tensor([k in TOKEN_KINDS for k in kinds], dtype=torch.bool)
    is_error = torch.tensor([k in ERROR_KINDS or (strict and k == "rest") for k in kinds], dtype=torch.bool)
    is_source = N.sum(1) == 0
    tokens, errors = float(infl[is_token].sum()), float(infl[is_error].sum())
    out = infl + w
    complete = float(((1 - N[:, is_error].sum(1)) * out).sum() / out.sum()) if float(out.sum()) > 0 else None
    if not strict:
        return (tokens / (tokens + errors) if tokens + errors > 0 else None), complete, {}
    total = float(infl[is_source].sum())
    rest = float(infl[torch.tensor([k == "rest" for k in kinds], dtype=torch.bool)].sum())
    shares = {"tokens": tokens, "errors": errors - rest, "rest": rest,
              "unexpanded": total - tokens - errors}
    return (tokens / total if total > 0 else None), complete, {k: v / total if total > 0 else 0.0
                                                               for k, v in shares.items()}


def graph_scores(graph: CircuitGraph) -> GraphScores:
    """Replacement and completeness of `graph`, as shown and strict (see the module docstring)."""
    rep, comp, _ = _scores(graph, strict=False)
    rep_s, comp_s, shares = _scores(graph, strict=True)
    return GraphScores(rep, comp, rep_s, comp_s, shares)


@dataclass(frozen=True)
class HeldoutCase:
    """One prompt of the task that the search never saw, with its own target."""

    prompt: str
    target: Target


@dataclass
class HeldOut:
    """The graph's features spliced in alone on held-out prompts: one row per prompt (`prompt`, `target`,
    `clean`, `recovered`, `recovered_frozen`, `n_features`, `n_dropped`) and the medians over them."""

    source: str
    rows: list[dict[str, Any]]
    skipped: list[str]

    @property
    def median(self) -> float | None:
        return _median([r["recovered"] for r in self.rows])

    @property
    def median_frozen(self) -> float | None:
        return _median([r["recovered_frozen"] for r in self.rows])

    def verdict(self) -> str | None:
        """`UNDER_HALF ...` when either median is under 0.5, else None."""
        return under_half(self.median, self.median_frozen, "held-out prompts (median)")

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "n": len(self.rows), "median_recovered": self.median,
                "median_recovered_frozen": self.median_frozen, "verdict": self.verdict(), "rows": self.rows,
                "skipped": self.skipped}


def _median(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def under_half(live: float | None, frozen: float | None, where: str) -> str | None:
    """The label for a fraction recovered under one half in either frame (None when neither is)."""
    frames = [f"{name} {round(v, 2) + 0.0:.2f}" for name, v in (("live", live), ("frozen", frozen))
              if v is not None and v < 0.5]  # (+ 0.0: no "-0.00")
    return f"{UNDER_HALF} on {where}: {', '.join(frames)}" if frames else None


def moved(features: Sequence[tuple[int, int, int]], anchor: int, pos: int, n_pos: int
          ) -> tuple[list[tuple[int, int, int]], int]:
    """`features` moved from target position `anchor` to `pos` in a prompt of `n_pos` tokens, and how many fell out."""
    out = [(layer, f, p - anchor + pos) for layer, f, p in features]
    kept = [t for t in out if 0 <= t[2] < n_pos]
    return kept, len(out) - len(kept)


def heldout_recovery(model: HookedModel, transcoders: Mapping[int, Dictionary],
                     features: Sequence[tuple[int, int, int]], anchor: int, cases: Sequence[HeldoutCase], *,
                     source: str = "", skipped: Sequence[str] = (), batch_size: int = 16, max_tokens: int = 2048,
                     progress: Callable[[int, int], None] | None = None) -> HeldOut:
    """The fraction recovered (live and frozen) by `features`, found with the target at position `anchor`, on
    each held-out case (see the module docstring). Cases of one token count run together, `batch_size` at a
    time and at most `max_tokens` tokens a batch (one forward pass per variant for the batch; the logits of a
    real vocabulary are the largest buffer); rows keep the order of `cases`."""
    ids = [model.to_tokens(case.prompt).input_ids for case in cases]
    by_length: dict[int, list[int]] = {}
    for i, x in enumerate(ids):
        by_length.setdefault(int(x.shape[1]), []).append(i)
    rows: list[dict[str, Any] | None] = [None] * len(cases)
    done = 0
    for n_pos, members in by_length.items():
        step = max(1, min(batch_size, max_tokens // n_pos))
        for start in range(0, len(members), step):
            chunk = members[start:start + step]
            targets = [cases[i].target for i in chunk]
            moves = [moved(features, anchor, t.position(n_pos), n_pos) for t in targets]
            recs = recovery_batch(model, transcoders, torch.cat([ids[i] for i in chunk]), targets,
                                  [kept for kept, _ in moves], without=False)
            for i, rec, (_, dropped) in zip(chunk, recs, moves, strict=True):
                case = cases[i]
                rows[i] = {"prompt": case.prompt, "target": case.target.label or case.target.kind,
                           "clean": rec.clean, "circuit": rec.circuit, "none": rec.none, "recovered": rec.recovered,
                           "circuit_frozen": rec.circuit_frozen, "none_frozen": rec.none_frozen,
                           "recovered_frozen": rec.recovered_frozen, "n_features": rec.n_features,
                           "n_dropped": dropped}
            done += len(chunk)
            if progress is not None:
                progress(done, len(cases))
    return HeldOut(source, [r for r in rows if r is not None], list(skipped))
