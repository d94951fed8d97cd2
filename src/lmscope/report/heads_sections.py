"""Report sections for heads: successor heads (the score heatmap, the best head per task, mod-10 features, edits)
for the demo, and one section per saved head result (succession, detectors, mod-10, arithmetic, in the wild)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lmscope.report.blocks import Block, KeyValues, Table, Text
from lmscope.report.figures import bar_chart, heatmap
from lmscope.report.report import Section


def successor_heads_section(model_name: str, succession: Mapping[str, Any], bias: Mapping[str, float],
                            mod10: Mapping[str, Any], arithmetic: Mapping[str, Any],
                            wild: Mapping[str, Any], contrast: Mapping[str, Any] | None = None, *,
                            chance: Mapping[str, Mapping[str, Any]] | None = None) -> Section:
    """`succession`, `mod10`, `arithmetic` are the results' `to_dict()`; `wild` a head summary of the best head;
    `contrast` (optional) another model's best head on what it reads and by the paper's formula, with the
    paper-formula head's input baseline: `{"model", "best", "score", "paper_best", "paper_score",
    "paper_baseline"}`; `chance` (optional) the probe's and the arithmetic's chance levels,
    `{"probe": {...}, "arithmetic": {...}}`, each `{"rate", "chance", "bound", "n", "at_chance"}` (the
    arithmetic's may add `features_rolled`, the rate with every residue's feature swapped for another's), shown
    beside both numbers so a rate no better than guessing is called that."""
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
                   f"{mod10['probe']['accuracy']:.2f} / {mod10['probe']['mean_cosine']:.2f}"
                   + _against_chance((chance or {}).get("probe"), "10 balanced residues", "held-out numbers"),
                   "vector arithmetic: success rate (all residue pairs)":
                   f"{arithmetic['overall']:.3f} at k = {arithmetic['k']}"
                   + _against_chance((chance or {}).get("arithmetic"), "a random token of the task", "edits"),
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
    verdict = _chance_verdict(chance)
    if verdict:
        blocks.insert(2, Text(verdict))
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
            "per_task": bars_data, "chance": None if chance is None else {k: dict(v) for k, v in chance.items()}}
    return Section("successor-heads", "Successor heads", blocks, data)


def _against_chance(level: Mapping[str, Any] | None, guess: str, trials: str) -> str:
    """The tail of a key-value row: the verdict, chance and its 3-sigma bound ("" without a chance level)."""
    if level is None:
        return ""
    verdict = "at chance" if level["at_chance"] else "above chance"
    rolled = level.get("features_rolled")
    control = "" if rolled is None else f"; with the residues' features rolled by one: {rolled:.3f}"
    return (f" ({verdict}: guessing {guess} gives {level['chance']:.3f}, 3σ bound {level['bound']:.3f} "
            f"on {level['n']} {trials}{control})")


def _chance_verdict(chance: Mapping[str, Mapping[str, Any]] | None) -> str:
    """Sentences saying which of the probe and the arithmetic are at chance, and what that rules out ("" when
    neither is, or the levels are unknown)."""
    if not chance:
        return ""
    meaning = {
        "probe": ("the mod-10 probe's held-out accuracy", "a linear probe reads the residue mod 10 from the "
                  "embeddings the head reads no better than guessing"),
        "arithmetic": ("the vector arithmetic's success rate", "edits with the mod-10 features move the head to "
                       "the new value's successor no more often than guessing")}
    said = [f"{meaning[k][0]} ({v['rate']:.3f}) is at chance ({v['chance']:.3f}; 3σ bound {v['bound']:.3f}): "
            f"{meaning[k][1]}" for k, v in chance.items() if k in meaning and v["at_chance"]]
    if not said:
        return ""
    return ("On this model " + "; and ".join(said) + ". Gould et al. report these on far larger models; here they "
            "are measured, not reproduced.")


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


def _grid(scores: Sequence[Sequence[float]], title: str, caption: str | None = None) -> tuple[Block, dict[str, Any]]:
    """A [layer][head] heatmap of head scores."""
    n_layers, n_heads = len(scores), len(scores[0]) if scores else 0
    return heatmap(scores, [f"head {h}" for h in range(n_heads)], [f"layer {layer}" for layer in range(n_layers)],
                   title=title, x_title="head", y_title="layer", caption=caption)


def _best(scores: Sequence[Sequence[float]]) -> tuple[int, int]:
    """(layer, head) of the largest score (the first one on ties, as `argmax` takes it)."""
    cells = [(lay, h) for lay in range(len(scores)) for h in range(len(scores[lay]))]
    return max(cells, key=lambda p: (scores[p[0]][p[1]], -p[0], -p[1]))


def succession_section(succession: Mapping[str, Any]) -> Section:
    """A saved `SuccessionScores.to_dict()` on its own: the score of every head, its best head, the tasks."""
    scores = succession["scores"]
    layer, head = _best(scores)
    fig, fig_data = _grid(scores, "Succession score of every head",
                          "Share of ordinal pairs whose successor has the top OV logit within its task")
    baseline = (succession.get("input_baseline") or {}).get("scores")
    blocks: list[Block] = [
        Text(f"Successor heads (Gould et al. 2023) in `{succession.get('model') or 'the model'}` "
             f"(mode {succession.get('mode')}): each head's OV circuit applied to the token embeddings that reach it; "
             "a pair succeeds when the successor gets the head's highest logit among the task's tokens."),
        KeyValues({"best head": f"{layer}.{head}", "succession score": f"{scores[layer][head]:.3f}",
                   "input baseline of its layer": "n/a" if baseline is None else f"{baseline[layer]:.3f}",
                   "heads above the threshold": ", ".join(f"{h['layer']}.{h['head']}"
                                                         for h in succession["top_heads"]) or "none"}),
        fig,
        Table(["task", f"score of {layer}.{head}", "pairs", "items dropped (unknown tokens)", "in the score"],
              _task_rows(succession, layer, head), caption="Per task: pairs scored and items dropped"),
    ]
    return Section("succession", "Successor heads: succession scores", blocks,
                   {"heatmap": fig_data, "best": [layer, head], "top_heads": succession["top_heads"]})


def head_detectors_section(scores: Mapping[str, Any]) -> Section:
    """A saved `HeadScores.to_dict()`: the best heads per detector and one heatmap per detector."""
    top = scores["top_heads"]
    rows = [[name.replace("_", "-"), f"{h['layer']}.{h['head']}", f"{h['score']:.3f}"]
            for name, heads in top.items() for h in heads[:1]]
    blocks: list[Block] = [
        Text(f"Head detectors on `{scores.get('model') or 'the model'}`: {scores['n_seqs']} sequences of "
             f"{scores['seq_len']} random tokens, each repeated once (seed {scores['seed']}). Previous-token, "
             "duplicate-token and induction: mean attention to the position they name; copying: how much the OV "
             "circuit raises the attended token's own logit."),
        Table(["detector", "best head (layer.head)", "score"], rows)]
    data: dict[str, Any] = {"top_heads": dict(top), "heatmaps": {}}
    for name, grid in scores["scores"].items():
        fig, data["heatmaps"][name] = _grid(grid, f"{name.replace('_', '-')} score")
        blocks.append(fig)
    return Section("head_detectors", "Attention heads: detector scores", blocks, data)


def mod10_section(mod10: Mapping[str, Any]) -> Section:
    """A saved `Mod10Result.to_dict()`: per residue class the feature that carries it, and the probe."""
    head = mod10["head"]
    rows = [[f["residue"], f["feature"], f"{f['coverage']:.2f}", f"{f['agreement']:.2f}", f"{f['effect']:.3f}"]
            for f in mod10["features"]]
    blocks: list[Block] = [
        KeyValues({"head": f"{head['layer']}.{head['head']}", "mean coverage": f"{mod10['mean_coverage']:.2f}",
                   "probe: held-out accuracy / mean cosine with the features":
                   f"{mod10['probe']['accuracy']:.2f} / {mod10['probe']['mean_cosine']:.2f}"}),
        Table(["residue", "feature", "coverage", "agreement over seeds", "successor-margin drop"], rows,
              caption="Per residue class, the SAE feature whose removal most lowers the successor logit through "
                      "the head")]
    return Section("mod10_features", "Mod-10 features", blocks, {"features": mod10["features"]})


def arithmetic_section(arithmetic: Mapping[str, Any]) -> Section:
    """A saved `ArithmeticResult.to_dict()`: the success rate per task at the chosen k, and the rate against k."""
    head = arithmetic["head"]
    bars, bars_data = bar_chart(list(arithmetic["by_k"]), [sum(r.values()) / max(len(r), 1)
                                                           for r in arithmetic["by_k"].values()],
                                title="Mean success rate over tasks at each k", x_title="k", y_title="rate")
    blocks: list[Block] = [
        KeyValues({"head": f"{head['layer']}.{head['head']}",
                   "success rate (all residue pairs)": f"{arithmetic['overall']:.2f} at k = {arithmetic['k']}"}),
        Table(["task", "success rate", "edits"],
              [[t, f"{r:.2f}", arithmetic["n_edits"][t]] for t, r in arithmetic["rates"].items()],
              caption="x - k·f_i + k·f_j moves an item from residue i to j; success when the head's top logit is "
                      "the successor of the new value"),
        bars]
    return Section("vector_arithmetic", "Vector arithmetic with mod-10 features", blocks, {"by_k": bars_data})


def wild_section(wild: Mapping[str, Any]) -> Section:
    """A saved `WildResult.to_dict()`: per token category, the head that matters most for it most often."""
    rows = [[t["category"], t["n_tokens"], "-" if t["layer"] is None else f"{t['layer']}.{t['head']}", t["tokens"],
             f"{t['share']:.0%}"] for t in wild["category_tops"]]
    blocks: list[Block] = [
        Text(f"Heads in the wild on {wild['n_tokens']:,} tokens: for each next token, the head that matters most "
             "for it, counted per category of the token."),
        Table(["category", "tokens", "top head", "tokens it wins", "share"], rows)]
    return Section("heads_in_the_wild", "Heads in the wild", blocks, {"category_tops": wild["category_tops"]})
