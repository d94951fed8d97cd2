"""Report section for neuron analysis: ranking, accuracy against k, and a word heatmap of one neuron."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from lmscope.report.blocks import Figure, KeyValues, Table, Text
from lmscope.report.figures import line_chart
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
