"""Attribution patching: exact where the metric is linear in the component, the first-order term of the
patch (a finite difference in float64) everywhere else, the same per pair however pairs are batched, and
its error against exact patching reported, not hidden."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lmscope import HookedModel
from lmscope.causal import (
    Component,
    Continuation,
    HookedModule,
    compare_estimates,
    patch_sweep,
    standard_components,
)
from lmscope.errors import InputError
from tiny_models import tiny_hf_model, tiny_hooked_with_tokenizer

BASE = ["the senator voted", "the soup was very hot today", "a storm hit"]
SOURCE = ["the chef baked the bread", "rain", "the stupid player scored twice"]


def _metric(logits: Tensor, index: Tensor) -> Tensor:
    return logits[:, 5] - logits[:, 7]


def _pair(seed: int = 0, shape: tuple[int, int] = (5, 7)) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 61, shape, generator=g), torch.randint(1, 61, shape, generator=g)


def _linear_components(d_model: int) -> list:
    """Units of `ln_final.hook_normalized`, which the logits (and so a logit difference) are linear in."""
    ln = "ln_final.hook_normalized"
    return [f"{ln}@-1", f"{ln}", f"{ln}@3", f"{ln}:3@-1", f"{ln}:{d_model - 1}@2",
            Component.of([f"{ln}:0@-1", f"{ln}:5@-1", f"{ln}:9@4"], label="unit set")]


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
def test_attribution_is_exact_where_the_metric_is_linear_in_the_component(family: str) -> None:
    model = HookedModel(tiny_hf_model(family))
    base, source = _pair()
    comps = _linear_components(32)
    exact = patch_sweep(model, base, source, comps, _metric)
    atp = patch_sweep(model, base, source, comps, _metric, method="attribution")
    moves = [0, 1, 3, 5]  # the others sit before the last token, which alone the metric reads
    assert exact.effects[:, moves].abs().mean(0).min() > 1e-3 and exact.effects[:, [2, 4]].abs().max() == 0
    torch.testing.assert_close(atp.effects, exact.effects, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(atp.y_base, exact.y_base)
    torch.testing.assert_close(atp.y_source, exact.y_source)
    assert atp.meta["method"] == "attribution" and exact.meta["method"] == "exact"
    assert atp.components == exact.components


def test_attribution_is_exact_for_padded_texts_of_different_lengths() -> None:
    model = tiny_hooked_with_tokenizer(300)  # each row's last token sits elsewhere in base and source
    comps = [*_linear_components(32)[:1], "ln_final.hook_normalized:7@-1", "ln_final.hook_normalized@1"]
    exact = patch_sweep(model, BASE, SOURCE, comps, _metric)
    atp = patch_sweep(model, BASE, SOURCE, comps, _metric, method="attribution")
    assert exact.effects[:, :2].abs().mean(0).min() > 1e-3
    torch.testing.assert_close(atp.effects, exact.effects, atol=1e-5, rtol=1e-4)


def _set_fraction(unit: Component, source_cache: dict, eps: float) -> list:
    """Hooks moving each unit of a component `eps` of the way from its base value to its source value."""
    hooks = []
    for u in unit.units:
        src = source_cache[u.hook]

        def fn(t: Tensor, *, hook: object, u=u, src=src) -> Tensor:
            t = t.clone()
            idx: tuple = (slice(None),) if u.position is None else (slice(None), 6 if u.position == -1 else u.position)
            if u.index is not None:
                idx = (*idx, *([slice(None)] if u.position is None else []), u.index) if u.kind == "head" \
                    else (*idx, ..., u.index)
            t[idx] = t[idx] + eps * (src[idx] - t[idx])
            return t

        hooks.append((u.hook, fn))
    return hooks


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])  # llama's RMSNorm computes in float32 even in float64
def test_attribution_is_the_first_order_term_of_every_patch(family: str) -> None:
    """d/de metric(base with a := a_base + e (a_source - a_base)) at e = 0, by central differences in
    float64, for heads, MLPs, attention outputs, residual streams, neurons and a unit set."""
    model = HookedModel(tiny_hf_model(family).double())
    base, source = _pair(3)
    comps = (standard_components(2, 4, "heads,mlp,attn,resid") + standard_components(2, 4, "heads,mlp", position=2)
             + standard_components(2, 4, "resid", position=None)
             + [Component.of("blocks.1.mlp.hook_post:5@-1"),
                Component.of(["blocks.0.attn:1@3", "blocks.1.mlp.hook_post:2@-1"], label="set")])
    atp = patch_sweep(model, base, source, comps, _metric, method="attribution")
    _, cache = model.run_with_cache(source)
    eps = 1e-4
    for k, c in enumerate(atp.components):
        comp = Component.of(c) if c != "set" else Component.of(["blocks.0.attn:1@3", "blocks.1.mlp.hook_post:2@-1"])
        up = _metric(model.run_with_hooks(base, hooks=_set_fraction(comp, cache, eps))[:, -1], torch.arange(5))
        down = _metric(model.run_with_hooks(base, hooks=_set_fraction(comp, cache, -eps))[:, -1], torch.arange(5))
        torch.testing.assert_close(atp.effects[:, k].double(), (up - down) / (2 * eps), atol=1e-5, rtol=1e-4,
                                   msg=lambda m, c=c: f"{c}: {m}")
    assert atp.effects.abs().mean() > 1e-3


def test_batching_over_pairs_equals_pair_by_pair() -> None:
    model = tiny_hooked_with_tokenizer(300)
    comps = standard_components(2, 4, "heads,mlp,resid") + standard_components(2, 4, "heads,mlp", position=1)
    together = patch_sweep(model, BASE, SOURCE, comps, _metric, method="attribution")
    one_row_per_pass = patch_sweep(model, BASE, SOURCE, comps, _metric, method="attribution", grad_rows=1)
    torch.testing.assert_close(one_row_per_pass.effects, together.effects, atol=1e-6, rtol=1e-5)
    for p in range(3):
        single = patch_sweep(model, [BASE[p]], [SOURCE[p]], comps, _metric, method="attribution")
        torch.testing.assert_close(together.effects[p], single.effects[0], atol=1e-5, rtol=1e-4)
    assert together.effects.abs().mean() > 1e-3


def test_per_row_targets_follow_their_rows_across_passes() -> None:
    model = HookedModel(tiny_hf_model("llama"))
    base, source = _pair(4)
    targets = torch.tensor([3, 9, 11, 20, 40])

    def per_row(logits: Tensor, index: Tensor) -> Tensor:
        return logits.gather(1, targets[index][:, None])[:, 0] - logits[:, 7]

    comps = ["ln_final.hook_normalized@-1", "blocks.1.attn:0@-1"]
    whole = patch_sweep(model, base, source, comps, per_row, method="attribution")
    chunked = patch_sweep(model, base, source, comps, per_row, method="attribution", grad_rows=2)
    exact = patch_sweep(model, base, source, comps, per_row)
    torch.testing.assert_close(chunked.effects, whole.effects, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(whole.effects[:, 0], exact.effects[:, 0], atol=1e-5, rtol=1e-4)


class Readout(nn.Module):
    """`a = W x` (hook a) -> `h = tanh(a)` (hook h) -> `y = w . h`: linear in h, not in a."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 2, 0], [0, 0, -1], [1, 1, 1]]))
        self.a, self.h = nn.Identity(), nn.Identity()
        self.w = torch.tensor([1.0, -2.0, 0.5, 3.0])

    def forward(self, x: Tensor) -> Tensor:
        return self.h(torch.tanh(self.a(self.lin(x)))) @ self.w


def test_hand_built_model_linear_then_nonlinear_with_the_error_reported() -> None:
    module = Readout()
    model = HookedModule(module, {"a": module.a, "h": module.h})
    x = torch.tensor([[0.2, -0.1, 0.4], [1.0, 0.5, -0.3], [-0.7, 0.2, 0.1]])
    x_src = torch.tensor([[1.5, 0.3, -0.2], [0.1, -0.9, 0.8], [0.4, 0.4, 0.4]])
    comps = ["h", "h:0", "h:3", Component.of(["h:1", "h:2"], label="h:1+2"), "a:0", "a:1", "a:2", "a:3"]
    y = lambda out, index: out  # noqa: E731
    atp = patch_sweep(model, x, x_src, comps, y, method="attribution", verify_top=8)
    weight = module.lin.weight.detach()
    a, a_src = x @ weight.T, x_src @ weight.T
    w = module.w
    exact_h = (a_src.tanh() - a.tanh()) * w  # linear in h: the estimate is exact
    torch.testing.assert_close(atp.effects[:, 0], exact_h.sum(1))
    torch.testing.assert_close(atp.effects[:, 1:3], exact_h[:, [0, 3]])
    torch.testing.assert_close(atp.effects[:, 3], exact_h[:, 1] + exact_h[:, 2])
    first_order_a = (a_src - a) * (1 - a.tanh() ** 2) * w  # through tanh: the tangent, not the chord
    torch.testing.assert_close(atp.effects[:, 4:], first_order_a)
    verify = atp.meta["verify"]
    by_label = dict(zip(verify["components"], verify["exact_mean_effect"], strict=True))
    for i in range(4):  # patching a:i or h:i is the same patch
        assert by_label[f"a:{i}"] == pytest.approx(float(exact_h[:, i].mean()), abs=1e-6)
    assert by_label["h:1+2"] == pytest.approx(float((exact_h[:, 1] + exact_h[:, 2]).mean()), abs=1e-6)
    assert by_label["h"] == pytest.approx(float(exact_h.sum(1).mean()), abs=1e-6)
    errors = (first_order_a - exact_h).mean(0)
    worst = int(errors.abs().argmax())
    assert verify["worst"]["component"] == f"a:{worst}"
    assert verify["worst"]["error"] == pytest.approx(float(errors[worst]), abs=1e-6)
    assert verify["max_abs_error"] == pytest.approx(float(errors.abs().max()), abs=1e-6) and errors.abs().max() > 0.05
    assert verify["top"] == 8 and verify["k"] == 4 and len(verify["exact_effects"]) == 3


def test_verify_reruns_the_largest_estimates_exactly() -> None:
    model = tiny_hooked_with_tokenizer(300)
    comps = standard_components(2, 4, "heads,mlp,resid") + standard_components(2, 4, "heads,mlp", position=1)
    stages: list[tuple[str, int, int]] = []
    atp = patch_sweep(model, BASE, SOURCE, comps, _metric, method="attribution", verify_top=6,
                      progress=lambda *a: stages.append(a))
    verify = atp.meta["verify"]
    top = [label for label, _ in atp.ranking(6)]
    assert verify["components"] == top
    exact = patch_sweep(model, BASE, SOURCE, top, _metric)
    torch.testing.assert_close(torch.tensor(verify["exact_mean_effect"]), exact.mean_effect)
    stats = compare_estimates(atp.effects[:, [atp.components.index(c) for c in top]], exact.effects, top, k=3)
    for key in ("pearson", "pearson_cells", "top_k_overlap", "mean_abs_error", "worst"):
        assert verify[key] == pytest.approx(stats[key]) if key != "worst" else verify[key] == stats[key]
    mean_errors = atp.effects[:, [atp.components.index(c) for c in top]].mean(0) - exact.effects.mean(0)
    assert verify["max_abs_error"] == pytest.approx(float(mean_errors.abs().max()), rel=1e-5)
    assert float(mean_errors.abs().max()) > 1e-4  # a tiny random transformer is not linear in its heads: error shows
    assert ("source run", 1, 1) in stages and ("base run", 1, 1) in stages
    assert ("verify patching", 0, stages[-1][2]) in stages and stages[-1][0] == "verify patching"


def test_compare_estimates_known_answers() -> None:
    est = torch.tensor([[1.0, 2.0, -3.0, 0.5], [1.0, 2.0, -3.0, 0.5]])
    ex = torch.tensor([[1.0, 2.5, -2.0, 0.0], [1.0, 1.5, -2.0, 0.0]])  # mean [1, 2, -2, 0]
    stats = compare_estimates(est, ex, ["a", "b", "c", "d"], k=2)
    m_est, m_ex = torch.tensor([1.0, 2.0, -3.0, 0.5]), torch.tensor([1.0, 2.0, -2.0, 0.0])
    assert stats["pearson"] == pytest.approx(float(torch.corrcoef(torch.stack([m_est, m_ex]))[0, 1]))
    assert stats["top_k_overlap"] == 1.0  # top-2 by |estimate|: c, b; by |exact|: b, c
    assert stats["worst"] == {"component": "c", "estimate": -3.0, "exact": -2.0, "error": -1.0}
    assert stats["mean_abs_error"] == pytest.approx(1.5 / 4) and stats["max_abs_error"] == 1.0
    assert stats["relative_max_error"] == pytest.approx(0.5)
    assert compare_estimates(torch.ones(3), torch.tensor([1.0, 2, 3]), ["a", "b", "c"], k=1)["pearson"] is None
    assert compare_estimates(torch.tensor([3.0, 1, 2]), torch.tensor([1.0, 2, 3]), ["a", "b", "c"],
                             k=1)["top_k_overlap"] == 0.0
    with pytest.raises(InputError, match=r"^estimates: expected two tensors \[\.\., 3\] of one shape, "
                                         r"got \(3,\) and \(4,\)$"):
        compare_estimates(torch.ones(3), torch.ones(4), ["a", "b", "c"])


def test_attribution_refuses_what_it_cannot_differentiate_and_leaves_the_model_as_it_was() -> None:
    model = HookedModel(tiny_hf_model("gpt2"))
    base, source = _pair()
    with pytest.raises(InputError, match=r"^method: got 'atp', expected one of exact, attribution$"):
        patch_sweep(model, base, source, ["blocks.0.attn:1"], _metric, method="atp")
    with pytest.raises(InputError, match=r"^verify_top: expected 0, or a positive count with "
                                         r"method='attribution' \(got 3\)$"):
        patch_sweep(model, base, source, ["blocks.0.attn:1"], _metric, verify_top=3)
    with pytest.raises(InputError, match=r"^metric: a greedy continuation is not differentiable; use method='exact'$"):
        patch_sweep(model, base, source, ["blocks.0.attn:1"], Continuation(2, lambda t, i: t[:, 0].float()),
                    method="attribution")
    with pytest.raises(InputError, match=r"^metric: its value has no gradient \(argmax, thresholds, "
                                         r"decoding\?\); use method='exact'$"):
        patch_sweep(model, base, source, ["blocks.0.attn:1"], lambda lg, i: lg.argmax(-1).float(),
                    method="attribution")
    with pytest.raises(InputError, match=r"^component blocks\.0\.hook_mlp_out: patching all positions needs base and "
                                         r"source inputs of the same length \(got \(5, 7\) and \(5, 5\)\); patch at a "
                                         r"position \(@P, or @-1 for the last token\)$"):
        patch_sweep(model, base, source[:, :5], ["blocks.0.hook_mlp_out"], _metric, method="attribution")
    assert all(p.requires_grad and p.grad is None for p in model.hf.parameters())
