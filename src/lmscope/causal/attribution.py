"""Attribution patching (AtP; Nanda 2023, Kramár et al. 2024): every component's patching effect estimated
from one forward pass on the sources and one forward + backward pass on the bases.

Patching component `c` from a source row into its base row changes the metric by

    effect_c = metric(base with a_c := a_c(source)) - metric(base)
             ~ (a_c(source) - a_c(base)) . d metric / d a_c   (gradient at the base run),

the first-order Taylor term. The dot product runs over everything the component patches: a head's
d_head slice of `hook_z` (at its position, each row's last token, or every position), an MLP's or
attention's output, a residual stream, one neuron (a scalar), and for a unit set the sum over its units.
One backward pass gives the gradient at every hooked activation of every base row at once, so the cost
does not grow with the number of components (the exact sweep runs one partial forward per component).

The estimate is exact when the metric is linear in the component, e.g. `ln_final.hook_normalized` under
a logit difference, and drifts where the model curves between the component and the metric: saturated
attention softmaxes downstream (AtP*'s "attention saturation"), large patches through a norm, effects
that cancel across paths. Its blind spot is a large, discrete change: on SmolLM2-135M with IOI pairs the
residual stream at the name that differs carries the whole logit difference when patched (-10.6), yet
its gradient at the base is nearly flat (+0.4): the metric moves along the path from base to source like
a step, not a line. Checking the largest estimates exactly (`verify_top`) catches overestimates, not
such misses. `compare_estimates` measures that drift against exact patching, and
`patch_sweep(method="attribution", verify_top=K)` re-runs the exact sweep on the K largest estimates.

Implemented: plain AtP, with the model's parameters frozen during the backward (no weight gradients).
Not implemented: AtP*'s QK fix, which recomputes the attention softmax exactly for query and key nodes:
lmscope's components do not split a head into queries and keys (a head is its whole output, `hook_z`),
so there is no query/key node to fix; and AtP*'s GradDrop (one more backward per layer, that layer's
residual gradient dropped, to catch effects that cancel across paths).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from lmscope.causal.components import LAST, Component
from lmscope.causal.continuation import Continuation
from lmscope.causal.engine import Outcome, Prepared, Progress, _check_shapes, _run_cached
from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel
from lmscope.model.hookpoints import HookPoint
from lmscope.model.toy import Runnable
from lmscope.model.window import last_logits_only


def attributed_effects(model: Runnable, base: Prepared, source: Prepared, pairs: Tensor,
                       components: Sequence[Component], outcome: Outcome, *, grad_rows: int = 16,
                       progress: Progress | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """First-order patching effects `[P, K]` of every component for the pairs `[P, 2]` (base, source index),
    with the unpatched outcomes `y_base [N_base]` and `y_source [N_source]`.

    Sources run once without gradients (`grad_rows` rows per pass), bases once forward and backward;
    progress stages "source run" and "base run" count those passes.
    """
    if isinstance(outcome, Continuation):
        raise InputError("metric: a greedy continuation is not differentiable; use method='exact'")
    if grad_rows < 1:
        raise InputError(f"grad_rows: expected at least 1, got {grad_rows}")
    pairs = torch.as_tensor(pairs, dtype=torch.long).reshape(-1, 2)
    names = sorted({h for c in components for h in c.hooks})
    report = progress or (lambda stage, i, n: None)
    y_src, src = _source_run(model, source, names, outcome, grad_rows, report)
    _check_shapes(components, base, source, src)
    y_base, acts, grads = _gradient_run(model, base, names, outcome, grad_rows, report)
    return _Terms(src, acts, grads, pairs, base.last, source.last).effects(components), y_base, y_src


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


def _rows(inputs: Prepared, lo: int, hi: int) -> Prepared:
    return Prepared(inputs.x[lo:hi], None if inputs.last is None else inputs.last[lo:hi])


def _source_run(model: Runnable, source: Prepared, names: list[str], outcome: Outcome, rows: int,
                report: Progress) -> tuple[Tensor, dict[str, Tensor]]:
    """Source outcomes and activations, `rows` inputs per forward pass, no gradients."""
    chunks = _chunks(len(source), rows)
    ys: list[Tensor] = []
    caches: list[dict[str, Tensor]] = []
    report("source run", 0, len(chunks))
    with torch.no_grad():
        for i, (lo, hi) in enumerate(chunks):
            y, cache, _ = _run_cached(model, _rows(source, lo, hi), names, _offset(outcome, lo), want_kv=False)
            ys.append(y)
            caches.append(cache)
            report("source run", i + 1, len(chunks))
    return torch.cat(ys), _concat(caches, names)


def _gradient_run(model: Runnable, base: Prepared, names: list[str], outcome: Outcome, rows: int,
                  report: Progress) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """Base outcomes, activations and d outcome / d activation at every named hook point."""
    chunks = _chunks(len(base), rows)
    ys: list[Tensor] = []
    acts: list[dict[str, Tensor]] = []
    grads: list[dict[str, Tensor]] = []
    report("base run", 0, len(chunks))
    with _frozen(model):
        for i, (lo, hi) in enumerate(chunks):
            y, a, g = _forward_backward(model, _rows(base, lo, hi), names, _offset(outcome, lo))
            ys.append(y)
            acts.append(a)
            grads.append(g)
            report("base run", i + 1, len(chunks))
    return torch.cat(ys), _concat(acts, names), _concat(grads, names)


def _forward_backward(model: Runnable, inputs: Prepared, names: list[str], outcome: Outcome
                      ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """One forward with every named activation kept in the graph, and one backward of the summed outcome
    (each row's outcome depends on its own row only, so the sum's gradient is every row's own)."""
    kept: dict[str, Tensor] = {}

    def keep(t: Tensor, *, hook: HookPoint) -> Tensor:
        if not t.requires_grad:  # nothing hooked upstream (parameters are frozen): start the graph here
            t = t.detach().requires_grad_(True)
        kept[hook.name] = t
        return t  # returned, so the model computes on with this very tensor

    index = torch.arange(len(inputs))
    hooks = [(n, keep) for n in names]
    with torch.enable_grad():
        if isinstance(model, HookedModel):
            with model.hooks(hooks), last_logits_only(model, inputs.last):  # type: ignore[arg-type]
                out = model.hf(input_ids=inputs.x, use_cache=False).logits[:, 0]
        else:
            out = model.run_with_hooks(inputs.x, hooks)
        y = outcome(out, index).float()  # type: ignore[arg-type]
        missing = [n for n in names if n not in kept]
        if missing:
            raise InputError(f"component hook {missing[0]!r}: the forward pass never reached it")
        if not y.requires_grad:
            raise InputError("metric: its value has no gradient (argmax, thresholds, decoding?); "
                             "use method='exact'")
        grads = torch.autograd.grad(y.sum(), [kept[n] for n in names], allow_unused=True)
    acts = {n: kept[n].detach() for n in names}
    return y.detach(), acts, {n: torch.zeros_like(acts[n]) if g is None else g.detach()
                              for n, g in zip(names, grads, strict=True)}


def _offset(outcome: Outcome, lo: int) -> Outcome:
    """The outcome of a chunk of rows starting at `lo`: per-row targets are looked up by global row index."""
    return outcome if lo == 0 else (lambda out, index: outcome(out, index + lo))


def _concat(caches: list[dict[str, Tensor]], names: list[str]) -> dict[str, Tensor]:
    """Chunks' activations joined on the row dimension (chunks are row slices of one padded tensor)."""
    missing = [n for n in names if any(n not in c for c in caches)]
    if missing:
        raise InputError(f"component hook {missing[0]!r}: the forward pass never reached it")
    return {n: torch.cat([c[n] for c in caches]) for n in names}


@contextmanager
def _frozen(model: Runnable) -> Iterator[None]:
    """Parameters stop requiring gradients for the duration (restored after): no weight gradients."""
    module = model.hf if isinstance(model, HookedModel) else getattr(model, "module", None)
    params = [p for p in module.parameters() if p.requires_grad] if isinstance(module, nn.Module) else []
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class _Terms:
    """(a(source) - a(base)) * gradient per pair, summed over each unit's dimensions: computed once per hook
    point and kind of position, then every unit of that kind picked out by one indexing operation."""

    def __init__(self, src: dict[str, Tensor], acts: dict[str, Tensor], grads: dict[str, Tensor], pairs: Tensor,
                 base_last: Tensor | None, source_last: Tensor | None) -> None:
        self.src, self.acts, self.grads = src, acts, grads
        self.b, self.s = pairs[:, 0], pairs[:, 1]
        self.b_last = None if base_last is None else base_last[self.b]
        self.s_last = None if source_last is None else source_last[self.s]

    def effects(self, components: Sequence[Component]) -> Tensor:
        """`[P, K]`: each component's first-order effect, the sum over its units."""
        groups: dict[tuple[str, str, str], tuple[list[int], list[int], list[int]]] = {}
        for k, c in enumerate(components):
            for u in c.units:
                where = "all" if u.position is None else "last" if u.position == LAST else "fixed"
                kind = "head" if u.kind == "head" else "neuron" if u.index is not None else "site"
                cols, positions, indices = groups.setdefault((u.hook, where, kind), ([], [], []))
                cols.append(k)
                positions.append(u.position if where == "fixed" and u.position is not None else 0)
                indices.append(u.index if u.index is not None else 0)
        device = next(iter(self.grads.values())).device
        effects = torch.zeros(len(self.b), len(components), device=device)
        for (hook, where, kind), (cols, positions, indices) in groups.items():
            values = self._pick(self._product(hook, where), where, kind, positions, indices)
            effects.index_add_(1, torch.tensor(cols, device=device), values)
        return effects.cpu()

    def _product(self, hook: str, where: str) -> Tensor:
        """`[P, ...]`: per pair, at each row's last token (`last`), or at every position (`all`, `fixed`: the
        positions both inputs have)."""
        a_s, a_b, g = self.src[hook], self.acts[hook], self.grads[hook]
        if where == "last":
            a_s, a_b, g = a_s[self.s, self.s_last], a_b[self.b, self.b_last], g[self.b, self.b_last]
        else:
            a_s, a_b, g = a_s[self.s], a_b[self.b], g[self.b]
            if where == "fixed":
                width = min(a_s.shape[1], a_b.shape[1])
                a_s, a_b, g = a_s[:, :width], a_b[:, :width], g[:, :width]
        return (a_s.float() - a_b.float()) * g.float()

    @staticmethod
    def _pick(d: Tensor, where: str, kind: str, positions: list[int], indices: list[int]) -> Tensor:
        """`[P, n_units]` from the product `d`: a head sums its d_head slice (`hook_z`'s last dimension is
        d_head, the one before it the head), a neuron is one index of the last dimension, a site is all of
        it; `fixed` units keep their position, `all` units sum over positions (and any other dimension)."""
        n = len(d)
        pos, idx = torch.tensor(positions), torch.tensor(indices)
        if kind == "head":
            d = d.sum(-1)  # [P, (pos), head]
        elif kind == "site":
            d = d.reshape(n, d.shape[1], -1).sum(-1) if where == "fixed" else d.reshape(n, -1).sum(1)
            return d[:, pos] if where == "fixed" else d[:, None].expand(n, len(positions))
        if where == "fixed":
            d = d.reshape(n, d.shape[1], -1, d.shape[-1]).sum(2)  # [P, pos, index]
            return d[:, pos, idx]
        return d.reshape(n, -1, d.shape[-1]).sum(1)[:, idx]  # [P, index]


def compare_estimates(estimate: Tensor, exact: Tensor, labels: Sequence[str], *, k: int = 10) -> dict[str, Any]:
    """How close attribution estimates are to exact effects, over the same components.

    `estimate` and `exact` are `[n_pairs, K]` effects (or `[K]` mean effects). Returns the Pearson
    correlation of the mean effects (None when either is constant), the same over every (pair, component)
    cell, the top-k overlap (of the k components largest by |estimate|, the share among the k largest by
    |exact|), the mean and largest absolute errors, the largest error relative to the largest |exact|,
    and the worst component (largest |estimate - exact| of the mean effect) with both values.
    """
    est, ex = estimate.double(), exact.double()
    if est.shape != ex.shape or est.shape[-1] != len(labels) or not labels:
        raise InputError(f"estimates: expected two tensors [.., {len(labels)}] of one shape, got "
                         f"{tuple(est.shape)} and {tuple(ex.shape)}")
    m_est, m_ex = (est.mean(0), ex.mean(0)) if est.ndim == 2 else (est, ex)
    k = max(1, min(k, len(labels)))
    top_est = set(m_est.abs().argsort(descending=True)[:k].tolist())
    top_ex = set(m_ex.abs().argsort(descending=True)[:k].tolist())
    err = m_est - m_ex
    worst = int(err.abs().argmax())
    scale = float(m_ex.abs().max())
    return {"n_components": len(labels), "pearson": _pearson(m_est, m_ex),
            "pearson_cells": _pearson(est.flatten(), ex.flatten()), "k": k,
            "top_k_overlap": len(top_est & top_ex) / k, "mean_abs_error": float(err.abs().mean()),
            "max_abs_error": float(err.abs().max()),
            "relative_max_error": float(err.abs().max()) / scale if scale > 0 else None,
            "worst": {"component": labels[worst], "estimate": float(m_est[worst]), "exact": float(m_ex[worst]),
                      "error": float(err[worst])}}


def _pearson(a: Tensor, b: Tensor) -> float | None:
    if len(a) < 2 or float(a.std()) == 0 or float(b.std()) == 0:
        return None
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])
