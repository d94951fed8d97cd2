"""Report section for successor heads: the score heatmap, the best head per task, mod-10 features, edits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmscope.report.blocks import KeyValues, Table, Text
from lmscope.report.figures import bar_chart, heatmap
from lmscope.report.report import Section


def successor_heads_section(model_name: str, succession: Mapping[str, Any], bias: Mapping[str, float],
                            mod10: Mapping[str, Any], arithmetic: Mapping[str, Any],
                            wild: Mapping[str, Any], contrast: Mapping[str, Any] | None = None) -> Section:
    """`succession`, `mod10`, `arithmetic` are the results' `to_dict()`; `wild` a head summary of the best head;
    `contrast` (optional) another model's best head on what it reads and by the paper's formula, with the
    paper-formula head's input baseline: `{"model", "best", "score", "paper_best", "paper_score",
    "paper_baseline"}`."""
    scores = succession["scores"]
    n_layers, n_heads = len(scores), len(scores[0])
    flat = max(((lay, h) for lay in range(n_layers) for h in range(n_heads)), key=lambda p: scores[p[0]][p[1]])
    layer, head = flat
    fig, fig_data = heatmap(scores, [f"head {h}" for h in range(n_heads)], [f"layer {lay}" for lay in range(n_layers)],
                            title="Succession score of every head", x_title="head", y_title="layer",
                            caption="Share of ordinal pairs whose successor has the top OV logit within its task")
    tasks = list(succession["per_task"])
    per_task = [succession["per_task"][t][layer][head] for t in tasks]
    bars, bars_data = bar_chart([*tasks, "roman (OOD)"],
                                [*per_task, succession["ood"].get("roman_numerals", [[0.0]])[layer][head]],
                                title=f"Head {layer}.{head}: succession score per task", y_title="score")
    task_rows = _task_rows(succession, layer, head)
    feat_rows = [[f["residue"], f["feature"], f"{f['coverage']:.2f}", f"{f['agreement']:.2f}", f"{f['effect']:.3f}"]
                 for f in mod10["features"]]
    edit_rows = [[t, f"{r:.2f}", arithmetic["n_edits"][t]] for t, r in arithmetic["rates"].items()]
    shares = wild["shares"]
    baseline = (succession.get("input_baseline") or {}).get("scores")
    blocks = [
        Text(f"Successor heads (Gould et al. 2023) in `{model_name}`: each head's OV circuit is applied to the "
             "token embeddings that reach it (the raw embedding for layer 0, whose attention runs before MLP0; "
             "embedding + MLP0 after it) for ordinal tasks (numbers 0-199, number words, ordinals, days, months "
             "and their abbreviations, letters; with and without a leading space); a pair succeeds when the "
             "successor gets the head's highest logit among the task's tokens. The input baseline scores the "
             "identity map on the same input: a head must beat it to be computing succession itself."),
        KeyValues({"best head": f"{layer}.{head}", "succession score": f"{scores[layer][head]:.3f}",
                   "input baseline of its layer": "n/a" if baseline is None else f"{baseline[layer]:.3f}",
                   "heads above the threshold": ", ".join(f"{h['layer']}.{h['head']}"
                                                         for h in succession["top_heads"]) or "none",
                   "greater-than bias (mean over tasks)": f"{sum(bias.values()) / max(len(bias), 1):.2f}",
                   "mod-10 features: mean coverage": f"{mod10['mean_coverage']:.2f}",
                   "mod-10 probe: held-out accuracy / mean cosine with the features":
                   f"{mod10['probe']['accuracy']:.2f} / {mod10['probe']['mean_cosine']:.2f}",
                   "vector arithmetic: success rate (all residue pairs)":
                   f"{arithmetic['overall']:.2f} at k = {arithmetic['k']}",
                   "in the wild: tokens this head matters most for": f"{wild['tokens']} ("
                   + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()) + ")"}),
        fig, bars,
        Table(["task", f"score of {layer}.{head}", "pairs", "items dropped (unknown tokens)", "in the score"],
              task_rows, caption=f"Per task: pairs scored and items dropped (of both variants: several tokens, or "
                                 f"the unknown token); tasks with fewer than {succession.get('min_pairs', 10)} pairs "
                                 "are too thin to count in the score"),
        Table(["residue", "feature", "coverage", "agreement over seeds", "successor-margin drop"], feat_rows,
              caption="Mod-10 features: per residue class, the SAE feature whose removal most lowers the "
                      "successor logit through the best head"),
        Table(["task", "success rate", "edits"], edit_rows,
              caption="Vector arithmetic: x - k·f_i + k·f_j moves an item from residue i to j; success when the "
                      "head's top logit is the successor of the new value"),
    ]
    if contrast is not None:
        pl, ph = contrast["paper_best"]
        blocks.insert(2, Text(
            f"Contrast, `{contrast['model']}`: its best head on what it reads scores only {contrast['score']:.2f} "
            f"(head {contrast['best'][0]}.{contrast['best'][1]}). Scored the paper's way (MLP0's output for every "
            f"head) head {pl}.{ph} reaches {contrast['paper_score']:.2f}, but it is a layer-{pl} head that never "
            f"reads MLP0's output, and MLP0's output read straight through the unembedding already scores "
            f"{contrast['paper_baseline']:.2f}: there MLP0 computes the successor and the head copies."))
    data = {"model": model_name, "succession": dict(succession),
            "contrast": None if contrast is None else dict(contrast), "greater_than_bias": dict(bias),
            "mod10": dict(mod10), "arithmetic": dict(arithmetic), "wild": dict(wild), "heatmap": fig_data,
            "per_task": bars_data}
    return Section("successor-heads", "Successor heads", blocks, data)


def _task_rows(succession: Mapping[str, Any], layer: int, head: int) -> list[list[Any]]:
    """One row per task of a succession result's dict (older results without counts show "n/a")."""
    n_pairs, dropped = succession.get("n_pairs", {}), succession.get("dropped", {})
    unknown, tried = succession.get("unknown", {}), succession.get("tried", {})
    headline = succession.get("headline_tasks")
    rows = []
    for task in [t for t in n_pairs if not t.startswith("ood:")] or list(succession["per_task"]):
        scores = succession["per_task"].get(task)
        drop = "n/a" if task not in dropped else (
            f"{dropped[task]}" + (f"/{tried[task]}" if task in tried else "")
            + (f" ({unknown[task]})" if unknown.get(task) else ""))
        rows.append([task, "-" if scores is None else f"{scores[layer][head]:.2f}", n_pairs.get(task, "n/a"), drop,
                     "n/a" if headline is None else ("yes" if task in headline else "no: too few pairs")])
    return rows
