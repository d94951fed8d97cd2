"""Causal mediation per component with a confounder: TE, NDE and NIE, unadjusted and adjusted.

Each row is a unit observed under treatment `T` (0/1) with a confounder label `C` (e.g. its topic) that
also drove the treatment. For a treated row `i`, a control row `j` and a component `M`:

    TE_ij  = Y(x_i) - Y(x_j)
    NIE_ij = Y(x_j with M set to M(x_i)) - Y(x_j)      "T=0 while M takes its value under T=1"
    NDE_ij = Y(x_i with M set to M(x_j)) - Y(x_j)      "T=1 while M is held at its value under T=0"

Averaging over all (i, j) pairs is the plain patching estimate: when C drives both T and M, the source of
a patch differs from its base in C too, so a unit that only tracks C looks like a mediator. Adjusting:

- stratified: average within each stratum of C (i and j share C), weighted by P(C);
- entropy balancing: weight both groups so their confounder moments equal the pooled sample's
  (Hainmueller 2012), then average over pairs with those weights. This removes bias that is additive
  in the balanced moments (the linear SCM); pairs still differ in C, so where a component's effect depends
  on C non-additively (a topic unit feeding a nonlinear outcome), stratification is the stronger adjustment.

Confidence intervals come from a bootstrap over rows within each treatment group, with the stratum
shares and the balancing weights recomputed in every replicate (all replicates in one batched pass).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from torch import Tensor

from lmscope.causal.balance import entropy_balance, one_hot_moments
from lmscope.causal.components import Component, as_components
from lmscope.causal.engine import DEFAULT_MAX_BYTES, Outcome, Progress, patched_outcomes, prepare
from lmscope.causal.results import MediationResult
from lmscope.causal.stats import bootstrap_counts, localization, percentile_ci
from lmscope.errors import InputError
from lmscope.model.toy import Runnable

log = logging.getLogger(__name__)
SCHEMES = ("unadjusted", "stratified", "entropy_balancing")


def mediate(model: Runnable, inputs: Any, treatment: Sequence[Any], confounder: Sequence[Hashable],
            components: Sequence[str | Component | Any], outcome: Outcome, *,
            features: Tensor | None = None, n_boot: int = 500, level: float = 0.95, max_pairs: int = 4096,
            top_k: int = 3, seed: int = 0, max_rows: int = 2048, max_bytes: int = DEFAULT_MAX_BYTES,
            skip_layers: bool = True, progress: Progress | None = None,
            outcome_name: str = "outcome") -> MediationResult:
    """TE, NDE and NIE of every component, unadjusted, stratified by `confounder` and entropy-balanced.

    `inputs` are N texts (or a tensor for a `HookedModule`); `treatment` N values in {0, 1};
    `confounder` N labels; `features [N, q]` are the moments entropy balancing equalises (default: the
    label's indicators). At most `max_pairs` treated x control pairs are patched: all same-stratum pairs
    first, the rest sampled, each weighted by its inverse inclusion probability. Each patched forward takes at
    most `max_rows` rows and about `max_bytes` of working memory (`lmscope.causal.engine`), whatever the number
    of rows, pairs and components; neither changes the numbers. `progress(stage, i, n)` hears the patching
    engine's stages, then "bootstrap".
    """
    comps = as_components(components)
    x = prepare(model, inputs)
    n = len(x)
    t = _treatment(treatment, n)
    codes, levels = _codes(confounder, n)
    feats = one_hot_moments(codes, len(levels)) if features is None else torch.as_tensor(features, dtype=torch.float64)
    if feats.shape[0] != n:
        raise InputError(f"features: expected {n} rows (one per input), got {feats.shape[0]}")
    i1, i0 = torch.nonzero(t).flatten(), torch.nonzero(~t).flatten()
    if not len(i1) or not len(i0):
        raise InputError("treatment: needs both treated (1) and control (0) rows")
    gen = torch.Generator().manual_seed(seed)
    design = _pair_design(codes[i1], codes[i0], max_pairs, gen)  # [n1, n0] inverse inclusion weights (0: out)
    ii, jj = torch.nonzero(design, as_tuple=True)
    pairs = torch.cat([torch.stack([i0[jj], i1[ii]], 1), torch.stack([i1[ii], i0[jj]], 1)])
    log.info("mediation: %d treated, %d control, %d pairs, %d components", len(i1), len(i0), len(ii), len(comps))
    run = patched_outcomes(model, x, x, pairs, comps, outcome, max_rows=max_rows, max_bytes=max_bytes,
                           skip_layers=skip_layers, progress=progress)
    y = run.y_base.double()
    k = len(comps)
    nie = torch.zeros(len(i1), len(i0), k, dtype=torch.float64)
    nde = torch.zeros_like(nie)
    y_j = y[i0[jj]][:, None]
    nie[ii, jj] = run.y_patched[: len(ii)].double() - y_j
    nde[ii, jj] = run.y_patched[len(ii) :].double() - y_j
    te = (y[i1][:, None] - y[i0][None, :])[..., None]
    if progress is not None:
        progress("bootstrap", 0, 1)
    a, c = bootstrap_counts(len(i1), n_boot, gen), bootstrap_counts(len(i0), n_boot, gen)
    estimators = _estimators(a, c, codes[i1], codes[i0], len(levels), feats[i1], feats[i0], design)
    effects: dict[str, dict[str, Any]] = {}
    diagnostics: dict[str, Any] = {}
    for scheme, (estimate, info) in estimators.items():
        out: dict[str, Any] = {}
        for name, values in (("te", te), ("nde", nde), ("nie", nie)):
            reps = estimate(values)
            lo, hi = percentile_ci(reps[1:], level)
            out[name] = {"estimate": reps[0].tolist(), "ci_low": lo.tolist(), "ci_high": hi.tolist(),
                         "se": reps[1:].std(0).tolist()}
        effects[scheme] = out
        diagnostics[scheme] = info
    if progress is not None:
        progress("bootstrap", 1, 1)
    return MediationResult(
        components=[c.label for c in comps], outcome=outcome_name, n_treated=len(i1), n_control=len(i0),
        strata=_strata_table(codes, t, levels), effects=effects,
        localization={s: localization(torch.tensor(e["nie"]["estimate"], dtype=torch.float64), top_k)
                      for s, e in effects.items()},
        by_stratum=_by_stratum(nie, design, codes[i1], codes[i0], levels),
        meta={"n_pairs": len(ii), "n_boot": n_boot, "level": level, "seed": seed, "max_pairs": max_pairs,
              "diagnostics": diagnostics, "mean_outcome_treated": float(y[i1].mean()),
              "mean_outcome_control": float(y[i0].mean())},
    )


def _treatment(treatment: Sequence[Any], n: int) -> Tensor:
    values = list(treatment)
    if len(values) != n:
        raise InputError(f"treatment: expected {n} values (one per input), got {len(values)}")
    bad = next((v for v in values if v not in (0, 1, True, False)), None)
    if bad is not None:
        raise InputError(f"treatment: expected 0/1 or true/false values, got {bad!r}")
    return torch.tensor([bool(v) for v in values])


def _codes(labels: Sequence[Hashable], n: int) -> tuple[Tensor, list[Hashable]]:
    values = list(labels)
    if len(values) != n:
        raise InputError(f"confounder: expected {n} labels (one per input), got {len(values)}")
    levels = sorted(set(values), key=str)
    index = {v: i for i, v in enumerate(levels)}
    return torch.tensor([index[v] for v in values]), levels


def _pair_design(c1: Tensor, c0: Tensor, max_pairs: int, gen: torch.Generator) -> Tensor:
    """Inverse inclusion probabilities `[n1, n0]` of the pairs to patch (0 where a pair is left out)."""
    same = c1[:, None] == c0[None, :]
    n_same, n_all = int(same.sum()), same.numel()
    if n_all <= max_pairs:
        return torch.ones(same.shape, dtype=torch.float64)
    q_same = min(1.0, max_pairs / 2 / max(n_same, 1)) if n_same > max_pairs / 2 else 1.0
    budget = max_pairs - q_same * n_same
    q_cross = min(1.0, budget / max(n_all - n_same, 1))
    q = torch.where(same, torch.tensor(q_same, dtype=torch.float64), torch.tensor(q_cross, dtype=torch.float64))
    keep = torch.rand(same.shape, generator=gen, dtype=torch.float64) < q
    return torch.where(keep, 1 / q, torch.zeros_like(q))


def _pair_mean(wi: Tensor, wj: Tensor, design: Tensor, values: Tensor) -> Tensor:
    """Weighted mean over pairs, per replicate: `wi [B, n1]`, `wj [B, n0]`, `values [n1, n0, K]` -> `[B, K]`."""
    left = torch.einsum("bi,ijk->bjk", wi, design[..., None] * values)
    num = torch.einsum("bjk,bj->bk", left, wj)
    den = torch.einsum("bi,ij,bj->b", wi, design, wj)
    return num / den[:, None]


def _estimators(a: Tensor, c: Tensor, c1: Tensor, c0: Tensor, n_levels: int, x1: Tensor, x0: Tensor,
                design: Tensor) -> dict[str, tuple[Callable[[Tensor], Tensor], dict[str, Any]]]:
    """One function per scheme mapping pair values `[n1, n0, K]` to replicates `[1 + B, K]`."""
    total = a.sum(1, keepdim=True) + c.sum(1, keepdim=True)
    masks1 = torch.nn.functional.one_hot(c1, n_levels).T.double()  # [L, n1]
    masks0 = torch.nn.functional.one_hot(c0, n_levels).T.double()
    share = (a @ masks1.T + c @ masks0.T) / total  # [B, L]
    present = ((a @ masks1.T) > 0) & ((c @ masks0.T) > 0)
    strat_w = torch.where(present, share, torch.zeros_like(share))

    def stratified(values: Tensor) -> Tensor:
        out = torch.zeros(a.shape[0], values.shape[-1], dtype=torch.float64)
        for s in range(n_levels):
            est = _pair_mean(a * masks1[s], c * masks0[s], design, values)
            out += strat_w[:, s : s + 1] * torch.nan_to_num(est)
        return out / strat_w.sum(1, keepdim=True)

    target = (a @ x1 + c @ x0) / total
    u, w = entropy_balance(x1, target, a), entropy_balance(x0, target, c)
    dropped = [s for s in range(n_levels) if not bool(present[0, s])]
    return {
        "unadjusted": (lambda v: _pair_mean(a, c, design, v), {}),
        "stratified": (stratified, {"strata_without_both_groups": dropped,
                                    "replicates_missing_a_stratum": int((~present[1:]).any(1).sum())}),
        "entropy_balancing": (lambda v: _pair_mean(u.weights, w.weights, design, v),
                              {"max_imbalance_treated": float(u.imbalance[0]),
                               "max_imbalance_control": float(w.imbalance[0])}),
    }


def _strata_table(codes: Tensor, t: Tensor, levels: list[Hashable]) -> dict[str, dict[str, Any]]:
    return {str(lv): {"treated": int(((codes == s) & t).sum()), "control": int(((codes == s) & ~t).sum()),
                      "share": float((codes == s).double().mean())} for s, lv in enumerate(levels)}


def _by_stratum(nie: Tensor, design: Tensor, c1: Tensor, c0: Tensor, levels: list[Hashable]) -> dict[str, Any]:
    """Point NIE per component within each stratum that has both groups."""
    out: dict[str, Any] = {}
    for s, lv in enumerate(levels):
        wi, wj = (c1 == s).double()[None], (c0 == s).double()[None]
        if wi.sum() and wj.sum():
            out[str(lv)] = _pair_mean(wi, wj, design, nie)[0].tolist()
    return out
