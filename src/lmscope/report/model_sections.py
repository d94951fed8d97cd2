"""Report sections about a model itself: zoo card, hook parity, an attention pattern, neuron statistics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lmscope.report.blocks import KeyValues, Table, Text
from lmscope.report.figures import bar_chart, heatmap, histogram, line_chart
from lmscope.report.report import Section


def model_card_section(name: str, cfg: Mapping[str, Any], card: Mapping[str, Any] | None) -> Section:
    """Sizes, training curve, held-out loss against the unigram baseline, ordinal accuracy."""
    blocks: list[Any] = [KeyValues({"model": name, **{k: cfg[k] for k in (
        "family", "n_layers", "n_heads", "d_model", "d_head", "d_mlp", "d_vocab", "n_ctx")}})]
    data: dict[str, Any] = {"model": name, "config": dict(cfg)}
    if card is None:
        blocks.append(Text("No zoo card: this model was not trained by lmscope's zoo."))
        return Section("model_card", f"Model card: {name}", blocks, data)
    curve = card["curve"]
    fig, fig_data = line_chart({"training loss": (curve["steps"], curve["losses"])}, title="Training curve",
                               x_title="step", y_title="cross-entropy (nats)")
    ordinal = card["ordinal"]
    rows = [[group, f"{v['accuracy']:.3f}", f"{v.get('accuracy_within_task', float('nan')):.3f}", v["n"]]
            for group, v in ordinal.items()]
    blocks += [
        KeyValues({"parameters": f"{card['n_params']:,}", "training tokens": f"{card['curve']['tokens']:,}",
                   "training time": f"{card['curve']['seconds']:.0f} s",
                   "held-out loss": f"{card['heldout_loss']:.3f} nats",
                   "unigram baseline": f"{card['unigram_loss']:.3f} nats",
                   "greater-than P(later) − P(earlier)": f"{card['greater_than']['prob_diff']:.3f}"}),
        fig,
        Text("Top-1 accuracy at continuing ordinal runs (`sequence`) and completing successor templates "
             "(`template`) on held-out prompts, over the whole vocabulary and among the task's own items "
             "(a run may also end, which only the first counts against the model). `template_heldout_items` "
             "are items never queried by a training template; `ood_roman` are Roman numerals, barely seen."),
        Table(["group", "top-1 accuracy", "top-1 within the task's items", "n"], rows, caption="Ordinal accuracy"),
    ]
    data.update({"card": dict(card), "training_curve": fig_data})
    return Section("model_card", f"Model card: {name}", blocks, data)


def parity_section(reports: Mapping[str, Mapping[str, Any]]) -> Section:
    """One row per model: are the hooks faithful (bit-equal logits, exact reconstructions)?"""
    cols = ["model", "logits equal", "z·W_O + b_O", "post·W_out + b_out", "resid chain", "pattern rows",
            "pattern causal", "hook points", "ok"]
    rows = [[name, r["logits_equal"], f"{r['z_to_attn_out']:.1e}", f"{r['post_to_mlp_out']:.1e}",
             f"{r['resid_chain']:.1e}", f"{r['pattern_row_sum']:.1e}", f"{r['pattern_above_diagonal']:.1e}",
             r["n_hook_points"], r["ok"]] for name, r in reports.items()]
    text = Text("Every hook point captured in one run: the logits must be bit-identical to the bare HF model's, "
                "and the per-head and per-neuron decompositions must rebuild the attention and MLP outputs "
                "(worst absolute error shown).")
    return Section("hook_parity", "Hook parity", [text, Table(cols, rows)], {"models": dict(reports)})


def attention_section(tokens: Sequence[str], pattern: Any, layer: int, head: int, note: str) -> Section:
    """A heatmap of one head's attention pattern on one example (`pattern [q, k]`)."""
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    fig, fig_data = heatmap(pattern, x_labels=labels, y_labels=labels, title=f"Layer {layer}, head {head}",
                            x_title="key (attended to)", y_title="query", colorscale="Blues")
    return Section("attention_pattern", "An attention pattern", [Text(note), fig],
                   {"layer": layer, "head": head, "tokens": list(tokens), "pattern": fig_data})


def neuron_stats_section(stats: Sequence[Mapping[str, Any]]) -> Section:
    """Per-layer MLP neuron statistics, with each layer's neuron-density histogram."""
    rows = [[s["layer"], f"{s['mean']:.3f}", f"{s['std']:.3f}", f"{s['max']:.2f}", f"{s['frac_active']:.3f}",
             f"{s['frac_dead']:.3f}", s["top_neuron"], " ".join(repr(t) for t in s["top_tokens"][:6])]
            for s in stats]
    table = Table(["layer", "mean", "std", "max", "active share", "dead share", "top-variance neuron",
                   "its top tokens"], rows)
    hist, hist_data = histogram([d for s in stats for d in s["neuron_density"]], bins=40,
                                title="Neuron density (share of tokens where a neuron is > 0), all layers",
                                x_title="density")
    bar, bar_data = bar_chart([f"layer {s['layer']}" for s in stats], [s["frac_active"] for s in stats],
                              title="Share of active (token, neuron) pairs per layer")
    return Section("neuron_stats", "MLP neurons per layer", [table, bar, hist],
                   {"layers": [dict(s) for s in stats], "density_histogram": hist_data, "active": bar_data})
