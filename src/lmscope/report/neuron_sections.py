"""Report sections for neuron analysis: the demo's POS neurons (ranking, accuracy against k, a word heatmap of one
neuron) and one section per saved result (ranking, evaluation, selectivity, ablation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from lmscope.report.blocks import Block, Figure, KeyValues, Table, Text
from lmscope.report.figures import bar_chart, line_chart
from lmscope.report.report import Section


def word_heatmap(sentences: Sequence[Sequence[str]], values: Sequence[Sequence[float]], title: str) -> Figure:
    """One row per sentence, one cell per word, coloured by the neuron's activation, the word written in it."""
    width = max(len(s) for s in sentences)
    z = [list(v) + [None] * (width - len(v)) for v in values]
    text = [list(s) + [""] * (width - len(s)) for s in sentences]
    fig = go.Figure(go.Heatmap(z=z, text=text, texttemplate="%{text}", colorscale="Reds", hoverongaps=False,
                               hovertemplate="%{text}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, height=60 + 42 * len(sentences), margin={"l": 30, "r": 30, "t": 50, "b": 30},
                      yaxis={"autorange": "reversed", "showticklabels": False}, xaxis={"showticklabels": False})
    return Figure(fig)


def pos_neurons_section(ranking: Mapping[str, Any], evaluation: Mapping[str, Any], noun_unit: str,
                        sentences: Sequence[Sequence[str]], activations: Sequence[Sequence[float]],
                        n_words: int) -> Section:
    """POS neurons of a model: the probe, the top neurons per tag, accuracy vs k, a noun neuron's heatmap."""
    ks = evaluation["ks"]
    curve, curve_data = line_chart(
        {"top-k": (ks, evaluation["top"]), "random-k": (ks, evaluation["random"]),
         "bottom-k": (ks, evaluation["bottom"])},
        title="POS probe accuracy using only k neurons", x_title="k (neurons, log scale)",
        y_title="held-out accuracy", log_x=True, markers=True)
    rows = [[label, ", ".join(f"{e['point'].split('.')[1]}:{e['neuron']}" for e in entries[:5])]
            for label, entries in ranking["per_class"].items()]
    heat = word_heatmap(sentences, activations, f"{noun_unit}, the top NOUN neuron, on held-out sentences")
    blocks = [
        Text("Part-of-speech neurons of `zoo:gpt2-tiny`, found as in NeuroX: the MLP neurons (`mlp.hook_post`) of "
             "every layer are extracted per word, an elastic-net probe (LCA) is trained on the POS tags of the "
             "synthetic corpus, and neurons are ranked by the magnitude of their probe weights."),
        KeyValues({"words": f"{n_words:,}", "neurons": len(ranking["ranking"]),
                   "probe accuracy (all neurons, held out)": f"{evaluation['all_neurons']:.3f}",
                   "majority-class baseline": f"{evaluation['majority']:.3f}"}),
        curve,
        Table(["tag", "top neurons (layer:neuron)"], rows, caption="Top neurons per tag"),
        heat,
    ]
    data = {"ranking_top": ranking["ranking"][:50], "per_class_top": {k: v[:10] for k, v in
                                                                       ranking["per_class"].items()},
            "evaluation": dict(evaluation), "accuracy_vs_k": curve_data, "noun_neuron": noun_unit,
            "heatmap": {"sentences": [list(s) for s in sentences], "activations": [list(a) for a in activations]}}
    return Section("pos_neurons", "POS neurons", blocks, data)


def ranking_section(ranking: Mapping[str, Any], top: int = 10) -> Section:
    """A saved `NeuronRanking.to_dict()`: the method, the probe's accuracy, the top neurons overall and per class."""
    overall = ranking["ranking"]
    bars, bars_data = bar_chart([f"{e['point']}:{e['neuron']}" for e in overall[:top]],
                                [e["score"] for e in overall[:top]], title=f"Top {top} neurons ({ranking['method']})",
                                y_title="score", horizontal=True)
    facts = {"method": ranking["method"], "rows": f"{ranking['n_rows']:,}", "neurons ranked": len(overall),
             "classes": ", ".join(ranking["labels"])}
    facts.update({f"probe accuracy ({k})": f"{v:.3f}" for k, v in (ranking.get("accuracy") or {}).items()})
    rows = [[label, ", ".join(f"{e['point']}:{e['neuron']}" for e in entries[:5])]
            for label, entries in ranking["per_class"].items()]
    blocks = [KeyValues(facts), bars, Table(["class", "top neurons"], rows, caption="Top neurons per class")]
    return Section("neuron_ranking", "Neuron ranking", blocks,
                   {"top": bars_data, "per_class_top": {k: v[:top] for k, v in ranking["per_class"].items()}})


def evaluation_section(evaluation: Mapping[str, Any]) -> Section:
    """A saved ranking evaluation (`neuron_evaluation`, or plain `accuracy_at_k`): accuracy with the top, random
    and bottom k neurons against k, and the selectivity (task − control accuracy) where it was measured."""
    ks = evaluation["ks"]
    curve, curve_data = line_chart(
        {"top-k": (ks, evaluation["top"]), "random-k": (ks, evaluation["random"]),
         "bottom-k": (ks, evaluation["bottom"])},
        title="Probe accuracy using only k neurons", x_title="k (neurons, log scale)", y_title="held-out accuracy",
        log_x=True, markers=True)
    blocks: list[Block] = [
        KeyValues({"method": evaluation.get("method", "-"), "neurons": evaluation["n_neurons"],
                   "probe accuracy (all neurons, held out)": f"{evaluation['all_neurons']:.3f}",
                   "majority-class baseline": f"{evaluation['majority']:.3f}"}),
        curve]
    sel = evaluation.get("selectivity")
    if sel:
        blocks.append(Table(["k", "task accuracy", "control accuracy", "selectivity"],
                            [[k, s["task_accuracy"], s["control_accuracy"], s["selectivity"]] for k, s in sel.items()],
                            caption="Selectivity (Hewitt & Liang 2019): task minus control-task accuracy of the same "
                                    "probe on the top k neurons"))
    return Section("neuron_evaluation", "Neuron ranking: accuracy against k", blocks, {"accuracy_vs_k": curve_data})


def selectivity_section(sel: Mapping[str, Any]) -> Section:
    """A saved `Selectivity.to_dict()`."""
    return Section("selectivity", "Selectivity", [KeyValues({
        "neurons": sel["n_neurons"], "task accuracy": f"{sel['task_accuracy']:.3f}",
        "control accuracy": f"{sel['control_accuracy']:.3f}", "selectivity": f"{sel['selectivity']:.3f}"})],
        {k: sel[k] for k in ("task_accuracy", "control_accuracy", "selectivity", "n_neurons")})


def ablation_section(ablation: Mapping[str, Any]) -> Section:
    """A saved `AblationResult.to_dict()`: probe accuracy and LM loss, clean, top-k ablated and random-k ablated."""
    rows = [[what, ablation[f"{key}_accuracy"], ablation[f"{key}_loss"]]
            for what, key in (("clean", "clean"), (f"top {ablation['k']} ablated", "top"),
                              (f"random {ablation['k']} ablated (mean of {ablation['random_draws']})", "random"))]
    blocks = [Text(f"{ablation['mode'].capitalize()}-ablation of the top {ablation['k']} neurons of a ranking "
                   f"({', '.join(ablation['units'][:5])}{', ...' if len(ablation['units']) > 5 else ''}) against "
                   "as many random neurons, on held-out sentences."),
              Table(["run", "probe accuracy", "LM loss"], rows)]
    return Section("neuron_ablation", "Neuron ablation", blocks, {"rows": rows})
