"""Report sections for causal analyses: NIE heatmaps by layer x component, before and after adjustment,
localization scores, per-component effects with intervals, and activation-patching heatmaps (exact, or
estimated by attribution patching with its error against exact patching where it was verified)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lmscope.model.hookpoints import layer_of
from lmscope.model.units import Unit
from lmscope.report.blocks import Block, KeyValues, Table, Text
from lmscope.report.figures import heatmap
from lmscope.report.report import Section

SCHEME_TITLES = {"unadjusted": "unadjusted (plain patching)", "stratified": "stratified by the confounder",
                 "entropy_balancing": "entropy-balanced"}


def _column(unit: Unit) -> str | None:
    if unit.kind == "head":
        return f"head {unit.index}"
    if unit.kind == "site":
        for suffix, name in (("hook_resid_pre", "resid"), ("hook_attn_out", "attn"), ("hook_mlp_out", "mlp"),
                             ("hook_resid_mid", "resid_mid"), ("hook_resid_post", "resid_post")):
            if unit.hook.endswith(suffix):
                return name
    return None


def layer_grid(labels: Sequence[str], values: Sequence[float]) -> tuple[list[list[float | None]], list[str],
                                                                           list[str]] | None:
    """Arrange per-component values as `[layer][column]` (resid, heads, attn, mlp); None if they don't fit."""
    cells: dict[tuple[int, str], float] = {}
    for label, value in zip(labels, values, strict=True):
        try:
            unit = Unit.parse(label)
        except Exception:  # a multi-unit component ("a+b") is not a grid cell
            return None
        layer, col = layer_of(unit.hook), _column(unit)
        if layer is None or col is None or (layer, col) in cells:
            return None
        cells[(layer, col)] = value
    order = ["resid", *sorted({c for _, c in cells if c.startswith("head ")}, key=lambda c: int(c.split()[1])),
             "attn", "mlp", "resid_mid", "resid_post"]
    cols = [c for c in order if any(cc == c for _, cc in cells)]
    layers = sorted({lay for lay, _ in cells})
    z = [[cells.get((lay, c)) for c in cols] for lay in layers]
    return z, cols, [f"layer {lay}" for lay in layers]


def position_grids(labels: Sequence[str], values: Sequence[float]) -> dict[str, tuple[list[list[float | None]],
                                                                                    list[str], list[str]]]:
    """Per-position effects of whole sites (resid, attn, mlp...) as `[layer][position]` grids, one per site
    kind; components that are not one unit at a fixed position of a block's site are left out."""
    cells: dict[str, dict[tuple[int, int], float]] = {}
    for label, value in zip(labels, values, strict=True):
        try:
            unit = Unit.parse(label)
        except Exception:  # a multi-unit component
            continue
        layer, col = layer_of(unit.hook), _column(unit)
        if unit.kind == "site" and layer is not None and col is not None and unit.position is not None \
                and unit.position >= 0:
            cells.setdefault(col, {})[(layer, unit.position)] = value
    grids = {}
    for col, got in cells.items():
        layers, positions = sorted({lay for lay, _ in got}), sorted({p for _, p in got})
        if len(positions) > 1:
            grids[col] = ([[got.get((lay, p)) for p in positions] for lay in layers], [str(p) for p in positions],
                          [f"layer {lay}" for lay in layers])
    return grids


def _heat(labels: Sequence[str], values: Sequence[float], title: str) -> tuple[Block, dict[str, Any]] | None:
    grid = layer_grid(labels, values)
    if grid is None:
        return None
    z, cols, rows = grid
    return heatmap(z, x_labels=cols, y_labels=rows, title=title, x_title="component", y_title="layer")


def mediation_section(result: Mapping[str, Any], *, model_name: str, treatment: str, confounder: str,
                      key: str = "causal_mediation", title: str = "Causal mediation with a confounder",
                      intro: str | None = None, top: int = 10) -> Section:
    """NIE heatmaps for every scheme, localization before/after, and the top components with their intervals.

    `result` is `MediationResult.to_dict()`.
    """
    labels = result["components"]
    blocks: list[Block] = [Text(intro or (
        f"Causal mediation in `{model_name}`: treatment `{treatment}`, outcome `{result['outcome']}`, confounder "
        f"`{confounder}`. For each component, the natural indirect effect (NIE) is the change in the outcome of a "
        "control input when that component alone takes its value from a treated input. Unadjusted, treated and "
        "control inputs differ in the confounder too; stratified, they are compared only within a stratum; "
        "entropy-balanced, both groups are reweighted to the pooled confounder distribution."))]
    loc_rows, data_figs = [], {}
    for scheme, eff in result["effects"].items():
        fig = _heat(labels, eff["nie"]["estimate"], f"NIE by layer and component, {SCHEME_TITLES.get(scheme, scheme)}")
        if fig is not None:
            blocks.append(fig[0])
            data_figs[scheme] = fig[1]
        loc = result["localization"][scheme]
        loc_rows.append([SCHEME_TITLES.get(scheme, scheme), eff["te"]["estimate"][0], loc["top_k_share"], loc["gini"]])
    k = next(iter(result["localization"].values()))["top_k"]
    blocks.insert(1, KeyValues({"treated / control rows": f"{result['n_treated']} / {result['n_control']}",
                                "patched pairs": result["meta"].get("n_pairs"),
                                "bootstrap replicates": result["meta"].get("n_boot"),
                                "strata (treated/control)": ", ".join(f"{s}: {v['treated']}/{v['control']}"
                                                                      for s, v in result["strata"].items())}))
    blocks.append(Table(["scheme", "TE", f"top-{k} share of |NIE|", "Gini of |NIE|"], loc_rows,
                        caption="Localization: how concentrated |NIE| is across components"))
    for scheme in ("unadjusted", "stratified"):
        if scheme not in result["per_component"]:
            continue
        rows = sorted(result["per_component"][scheme], key=lambda r: -abs(r["nie"]))[:top]
        blocks.append(Table(["component", "NIE", "NIE 95% CI", "NDE", "NDE 95% CI"],
                            [[r["component"], r["nie"], _ci(r["nie_ci"]), r["nde"], _ci(r["nde_ci"])] for r in rows],
                            caption=f"Top components by |NIE|, {SCHEME_TITLES.get(scheme, scheme)}"))
    data = {"localization": result["localization"], "heatmaps": data_figs, "strata": result["strata"],
            "per_component": result["per_component"]}
    return Section(key, title, blocks, data)


METHOD_TEXT = {
    "exact": "each component is copied from the source input into its base input and the change in `{metric}` "
             "is averaged over {n} pairs",
    "attribution": "each component's patching effect on `{metric}` is estimated by attribution patching (AtP): "
                   "(activation in the source - activation in the base) . gradient of the metric at the base, "
                   "summed over the component's dimensions, from one forward and one backward pass, and averaged "
                   "over {n} pairs. It is a first-order estimate: exact where the metric is linear in the "
                   "component, off where the model curves in between",
}


def patching_section(result: Mapping[str, Any], *, model_name: str, key: str = "activation_patching",
                     top: int = 15) -> Section:
    """The mean patching effect per component (heatmap when components form a layer grid) and the top ones;
    for attribution patching, the method, and where it was verified the estimates beside the exact effects."""
    labels, mean = result["components"], result["mean_effect"]
    meta = result.get("meta", {})
    method = meta.get("method", "exact")
    what = "estimated " if method == "attribution" else ""
    blocks: list[Block] = [Text(
        f"Activation patching in `{model_name}`: "
        + METHOD_TEXT.get(method, METHOD_TEXT["exact"]).format(metric=result["metric"], n=len(result["y_base"]))
        + ". `recovered` is that change over the mean source-base gap.")]
    data: dict[str, Any] = {"method": method}
    fig = _heat(labels, mean, f"Mean {what}change in {result['metric']} by layer and component")
    if fig is not None:
        blocks.append(fig[0])
        data["heatmap"] = fig[1]
    for col, (z, positions, layers) in position_grids(labels, mean).items():
        block, fig_data = heatmap(z, x_labels=positions, y_labels=layers, x_title="position", y_title="layer",
                                  title=f"Mean {what}change in {result['metric']} when patching {col}, by layer "
                                        "and position")
        blocks.append(block)
        data.setdefault("position_heatmaps", {})[col] = fig_data
    order = sorted(range(len(labels)), key=lambda i: -abs(mean[i]))[:top]
    blocks.append(Table(["component", f"mean {what}effect", "recovered"],
                        [[labels[i], mean[i], result["recovered"][i]] for i in order],
                        caption=f"Components by |mean {what}effect|"))
    data["ranking"] = [{"component": labels[i], "mean_effect": mean[i]} for i in order]
    verify = meta.get("verify")
    if verify:
        blocks.extend(_verify_blocks(verify))
        data["verify"] = {k: v for k, v in verify.items() if k != "exact_effects"}
    return Section(key, "Activation patching", blocks, data)


def _verify_blocks(verify: Mapping[str, Any]) -> list[Block]:
    """The estimate's error against exact patching on the components re-run exactly."""
    w = verify["worst"]
    stats = KeyValues({
        "components re-run exactly": f"the {verify['top']} largest |estimates|",
        "Pearson r (mean effects)": verify["pearson"], "Pearson r (every pair)": verify["pearson_cells"],
        f"top-{verify['k']} overlap": verify["top_k_overlap"], "mean |error|": verify["mean_abs_error"],
        "largest |error| / largest |exact|": verify["relative_max_error"],
        "worst component": f"{w['component']}: estimate {w['estimate']:+.4g}, exact {w['exact']:+.4g}, "
                           f"error {w['error']:+.4g}"})
    rows = [[c, e, x, e - x] for c, e, x in zip(verify["components"], verify["estimate_mean_effect"],
                                                verify["exact_mean_effect"], strict=True)]
    return [Text("Attribution patching checked against exact patching on the components it ranks highest."), stats,
            Table(["component", "estimate", "exact", "error"], rows,
                  caption="Estimated and exact mean effects of the verified components")]


def _ci(ci: Sequence[float]) -> str:
    return f"[{ci[0]:.3g}, {ci[1]:.3g}]"
