"""Report section for the white-box comparison: loss, interpretability per layer with CIs, example explanations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmscope.report.blocks import KeyValues, Table, Text
from lmscope.report.figures import line_chart
from lmscope.report.report import Section

METRIC_NAMES = {"top_and_random": "top-and-random", "random_only": "random-only", "detection": "detection",
                "best_iou": "best label IoU"}


def _ci(s: Mapping[str, Any] | None) -> str:
    if not s or s.get("mean") is None:
        return "n/a"
    return f"{s['mean']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]"


def _rel(r: Mapping[str, Any] | None) -> str:
    if not r or r.get("value") is None:
        return "n/a"
    return f"{r['value']:+.0%} [{r['lo']:+.0%}, {r['hi']:+.0%}]"


def comparison_section(result: Mapping[str, Any], key: str = "whitebox") -> Section:
    """The comparison of `ComparisonResult.to_dict()`: one table row per layer and metric, a chart, examples."""
    models = list(result["models"])
    first, per = models[0], result["per_model"]
    others = models[1:]
    layers = [k for k in per[first]["summary"] if k != "all"]
    skipped = dict(result.get("skipped") or {})
    metrics = {m: label for m, label in METRIC_NAMES.items() if m not in skipped}
    rows = []
    for layer in [*layers, "all"]:
        for metric, label in metrics.items():
            row = [layer, label, *(_ci(per[m]["summary"].get(layer, {}).get(metric)) for m in models)]
            row += [_rel(result["relative_improvement"][o].get(layer, {}).get(metric)) for o in others]
            rows.append(row)
    columns = ["layer", "score", *(f"{m} mean [95% CI]" for m in models), *(f"{first} vs {o}" for o in others)]
    filled = [[label, *(_ci(per[m]["summary"]["all"][metric]["zero_filled"]) for m in models),
               *(_rel(result["relative_improvement"][o]["all"][metric]["zero_filled"]) for o in others)]
              for metric, label in metrics.items()]
    series = {m: (layers, [per[m]["summary"][lay]["top_and_random"]["mean"] for lay in layers]) for m in models}
    chart, chart_data = line_chart(series, title="Top-and-random explanation score per layer", x_title="layer",
                                   y_title="mean correlation (offline explainer)", markers=True)
    structure = [[m, layer, s.get("dead_fraction"), s.get("mean_density"), s.get("median_kurtosis")]
                 for m in models for layer in [*layers, "all"]
                 if (s := per[m]["summary"].get(layer, {}).get("structure"))]
    examples = []
    for m in models:
        units = sorted((u for u in result.get("units", {}).get(m, []) if u.get("top_and_random") is not None),
                       key=lambda u: -u["top_and_random"])[:4]
        examples += [[m, u["unit"], u["top_and_random"], u["explanation"]] for u in units]
    corpus = result.get("corpus") or {"source": "synthetic"}
    synthetic = corpus.get("source") == "synthetic"
    where = (f"the same held-out synthetic corpus ({result['config']['n_sentences']} sentences)" if synthetic else
             f"the same text, `{corpus['source']}` ({corpus.get('n_documents')} documents in "
             f"{corpus.get('n_texts')} windows of at most {corpus.get('max_tokens')} tokens; neurons scored on "
             f"{corpus.get('n_texts_scored')}, loss on {corpus.get('n_texts_loss')})")
    loss_label = "held-out loss (nats)" if synthetic else "loss on the corpus (nats/token)"
    blocks = [
        Text(f"`{first}` against {', '.join(f'`{o}`' for o in others)} on {where}: each model's MLP neurons "
             "(CRATE: the ISTA sparse codes) are explained offline from their top-activating and quantile contexts "
             "and scored on held-out records (Bills et al.: correlation of simulated and true activations on "
             "top-and-random and random-only records; detection: balanced accuracy at telling top from "
             "non-activating contexts)"
             + (", beside the best IoU of each neuron with a known label (POS, task item, topic)" if synthetic else "")
             + ". Brackets are 95% bootstrap CIs; the last columns are the relative improvement "
             "`mean(first) / mean(other) - 1`."
             + "".join(f" Skipped: {METRIC_NAMES.get(m, m)}, which {why}." for m, why in skipped.items())),
        KeyValues({**{f"{m}: {loss_label}": f"{per[m]['heldout_loss']:.4f}" for m in models},
                   **{f"{m}: parameters / neurons per layer": f"{per[m]['n_params']:,} / {per[m]['d_mlp']}"
                      for m in models},
                   "wall time": f"{result['seconds']:.1f} s"}),
        Table(columns, rows, caption="Interpretability scores per layer and overall (undefined scores left out: "
                                     "a dead neuron, or one constant on the held-out random records)"),
        Table(columns[1:], filled, caption="Overall, with undefined scores counted as 0"),
        chart,
        Table(["model", "layer", "dead fraction", "mean density", "median kurtosis"], structure,
              caption="Activation structure of the neurons"),
        Table(["model", "neuron", "top-and-random", "explanation"], examples, caption="Best-explained neurons"),
    ]
    return Section(key, "White-box (CRATE) vs GPT: neuron interpretability", blocks,
                   {"comparison": {k: v for k, v in result.items() if k != "units"}, "per_layer_chart": chart_data})


def comparison_page(result: Mapping[str, Any]) -> str:
    """The report.html of a saved comparison (`ComparisonResult.to_dict()`): its one section on a page."""
    from lmscope.report.report import Report

    report = Report("White-box vs GPT: neuron interpretability", meta={"models": list(result["models"])})
    report.add(comparison_section(result))
    return report.render_html()
