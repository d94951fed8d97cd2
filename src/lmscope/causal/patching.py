"""Activation patching over many components in one call, exactly or by attribution patching.

    effects = patch_sweep(model, base_texts, source_texts, standard_components(4, 4, "heads,mlp"),
                          logit_diff(model, " Tuesday", " Monday"))
    effects.mean_effect      # [n_components]: metric(base with the component from source) - metric(base)

Row `p` of `base` is patched from row `p` of `source`. All positions of a hook point are patched when a
unit has no `@P` (inputs must then have equal lengths); `@-1` patches each row's last real token.

`method="exact"` (the default) runs every patch (`lmscope.causal.engine`); `method="attribution"` estimates
every effect to first order from one forward on the sources and one forward + backward on the bases
(`lmscope.causal.attribution`), and with `verify_top=K` re-runs the K largest estimates exactly and records
the estimate's error (`meta["verify"]`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lmscope.causal.attribution import attributed_effects, compare_estimates
from lmscope.causal.components import Component, as_components
from lmscope.causal.engine import Outcome, Prepared, Progress, patched_outcomes, prepare
from lmscope.causal.results import PatchingResult
from lmscope.errors import InputError
from lmscope.model.toy import Runnable

METHODS = ("exact", "attribution")


def patch_sweep(model: Runnable, base: Any, source: Any, components: Sequence[str | Component | Any],
                metric: Outcome, *, metric_name: str = "metric", method: str = "exact", verify_top: int = 0,
                max_rows: int = 2048, grad_rows: int = 16, skip_layers: bool = True,
                progress: Progress | None = None) -> PatchingResult:
    """Patch every component from each source row into its base row; effects `[n_pairs, n_components]`.

    `method`: "exact" (one patched forward per component and pair, stacked `max_rows` rows per forward) or
    "attribution" (first-order estimates for all components at once, `grad_rows` rows per forward/backward).
    `verify_top=K` (attribution only): re-run the K components with the largest |mean estimate| exactly;
    `meta["verify"]` then holds their exact effects and `compare_estimates` of the two.
    """
    if method not in METHODS:
        raise InputError(f"method: got {method!r}, expected one of {', '.join(METHODS)}")
    if verify_top < 0 or (verify_top and method != "attribution"):
        raise InputError(f"verify_top: expected 0, or a positive count with method='attribution' (got {verify_top})")
    comps = as_components(components)
    b, s = prepare(model, base), prepare(model, source)
    if len(b) != len(s):
        raise InputError(f"source: expected {len(b)} inputs (one per base input), got {len(s)}")
    pairs = torch.arange(len(b))[:, None].repeat(1, 2)
    meta: dict[str, Any] = {"n_pairs": len(b), "method": method}
    if method == "attribution":
        effects, y_base, y_source = attributed_effects(model, b, s, pairs, comps, metric, grad_rows=grad_rows,
                                                       progress=progress)
        result = PatchingResult([c.label for c in comps], effects, y_base, y_source, metric=metric_name, meta=meta)
        if verify_top:
            result.meta["verify"] = _verify(model, b, s, comps, result, metric, verify_top, max_rows=max_rows,
                                            skip_layers=skip_layers, progress=progress)
        return result
    run = patched_outcomes(model, b, s, pairs, comps, metric, max_rows=max_rows, skip_layers=skip_layers,
                           progress=progress)
    meta["skip_layers"] = skip_layers
    return PatchingResult([c.label for c in comps], run.y_patched - run.y_base[:, None], run.y_base, run.y_source,
                          metric=metric_name, meta=meta)


def _verify(model: Runnable, base: Prepared, source: Prepared, comps: list[Component], estimate: PatchingResult,
            metric: Outcome, top: int, *, max_rows: int, skip_layers: bool, progress: Progress | None
            ) -> dict[str, Any]:
    """Exact effects of the `top` largest estimates and the estimate's error on them (k of the top-k overlap:
    min(10, half of them))."""
    order = estimate.mean_effect.abs().argsort(descending=True)[:top].tolist()
    chosen = [comps[i] for i in order]
    stage = None if progress is None else (lambda name, i, n: progress(f"verify {name}", i, n))
    pairs = torch.arange(len(base))[:, None].repeat(1, 2)
    run = patched_outcomes(model, base, source, pairs, chosen, metric, max_rows=max_rows, skip_layers=skip_layers,
                           progress=stage)
    exact = run.y_patched - run.y_base[:, None]
    labels = [c.label for c in chosen]
    stats = compare_estimates(estimate.effects[:, order], exact, labels, k=min(10, max(1, len(order) // 2)))
    return {"top": len(order), "components": labels, "estimate_mean_effect": estimate.mean_effect[order].tolist(),
            "exact_mean_effect": exact.mean(0).tolist(), "exact_effects": exact.tolist(), **stats}
