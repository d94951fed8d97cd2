"""Report sections for sparse dictionaries: a transcoder (metrics, training curve, a few features read out), a
stack of them, and saved `lmscope dict eval` and spliced-metrics results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmscope.report.blocks import KeyValues, Table, Text
from lmscope.report.figures import histogram, line_chart
from lmscope.report.report import Section


def recovered_text(spliced: Mapping[str, Any]) -> str:
    """The fraction of loss recovered, or "undefined" with the reason when the ablation did not hurt."""
    if spliced.get("loss_recovered") is None:
        return spliced.get("loss_recovered_note") or "undefined"
    return f"{spliced['loss_recovered']:.3f}"


def positions_text(positions: Mapping[str, Any]) -> str:
    """Which leading positions (attention sinks) were left out of training and evaluation."""
    parts = (["BOS"] if positions.get("prepend_bos") else []) + (
        [f"first {positions['exclude_first']} text tokens"] if positions.get("exclude_first") else [])
    return "all real tokens" if not parts else "all real tokens except " + " and ".join(parts)


def corpus_text(corpus: Mapping[str, Any] | None) -> str:
    """The training corpus in a few words."""
    if not corpus:
        return "not recorded"
    tokens = f", {corpus['tokens']:,} tokens" if corpus.get("tokens") else ""
    return f"{corpus.get('source')} ({corpus.get('n_texts', '?')} texts{tokens})"


def transcoder_section(model_name: str, cfg: Mapping[str, Any], result: Mapping[str, Any],
                       history: Sequence[Mapping[str, Any]], features: Sequence[Mapping[str, Any]]) -> Section:
    """Metrics (L0, FVU, loss recovered), the loss curve, the density histogram and feature read-outs."""
    m, s = result["metrics"], result["spliced"]
    steps = [h["step"] for h in history]
    curve, curve_data = line_chart({"loss": (steps, [h["loss"] for h in history]),
                                    "L0": (steps, [h["l0"] for h in history])},
                                   title="Training", x_title="step", log_y=True)
    density = [c for c in m.get("density_hist", [])]
    edges = m.get("density_log10_edges", [])
    hist, hist_data = histogram([e for e, n in zip(edges, density, strict=False) for _ in range(int(n))] or [0],
                                bins=max(len(edges) - 1, 1), title="Feature density (log10 share of tokens)",
                                x_title="log10 density")
    rows = [[f["feature"], f"{f['density']:.3f}", " · ".join(text for _, text in f["top_examples"][:3]),
             " ".join(repr(t) for t, _ in f["de_embedding"][:6])] for f in features]
    blocks = [
        Text(f"A transcoder for the MLP of `{cfg['hook_name'].split('.')[1]}` in `{model_name}`: a wide ReLU MLP "
             f"with an L1 penalty trained to map `{cfg['hook_name']}` to `{cfg['hook_name_out']}` on "
             "activations streamed from the model. Spliced in place of the MLP, it keeps the LM loss close to "
             "clean; the de-embedding (`W_E @ W_enc[:, f]`) lists the tokens that drive a feature directly. "
             "Attention-sink positions (the BOS) are left out of training, metrics and top contexts."),
        KeyValues({"features (d_sae)": cfg["d_sae"], "L0 (active features per token)": f"{m['l0']:.1f}",
                   "FVU (vs the mean)": f"{m['fvu']:.4f}", "dead / dense features":
                   f"{m['dead_fraction']:.3f} / {m['dense_fraction']:.3f}",
                   "LM loss clean / spliced / MLP mean-ablated":
                   f"{s['clean_loss']:.4f} / {s['spliced_loss']:.4f} / {s['ablated_loss']:.4f}",
                   "fraction of loss recovered": recovered_text(s), "KL(clean ‖ spliced)": f"{s['kl_div']:.4f}",
                   "positions": positions_text(result.get("positions") or cfg),
                   "trained on": corpus_text(cfg.get("corpus"))}),
        curve, hist,
        Table(["feature", "density", "top contexts ([token] where it fires)", "top de-embedding tokens"], rows,
              caption="The most frequent features"),
    ]
    data = {"model": model_name, "cfg": dict(cfg), "result": dict(result), "training": curve_data,
            "density_histogram": hist_data, "features": [dict(f) for f in features]}
    return Section("transcoder", "A transcoder", blocks, data)


def _spliced_items(s: Mapping[str, Any]) -> dict[str, str]:
    return {"LM loss clean / spliced / mean-ablated":
            f"{s['clean_loss']:.4f} / {s['spliced_loss']:.4f} / {s['ablated_loss']:.4f}",
            "fraction of loss recovered": recovered_text(s), "KL(clean ‖ spliced)": f"{s['kl_div']:.4f}",
            "tokens": f"{s['n_tokens']:,}"}


def metrics_section(result: Mapping[str, Any]) -> Section:
    """A saved `lmscope dict eval` result (`dictionary_metrics`): reconstruction on held-out text and the LM loss
    with the dictionary spliced in."""
    m, s = result["metrics"], result["spliced"]
    items = {"dictionary": result.get("dictionary", "-"), "model": result.get("model", "-"),
             "hook": f"{result['hook_name']} → {result['hook_name_out']}",
             "L0 (active features per token)": f"{m['l0']:.1f}", "FVU (vs the mean)": f"{m['fvu']:.4f}",
             "dead / dense features": f"{m['dead_fraction']:.3f} / {m['dense_fraction']:.3f}",
             **_spliced_items(s), "positions": positions_text(result.get("positions") or {}),
             "evaluated on": corpus_text(result.get("corpus")), "trained on": corpus_text(result.get("trained_on"))}
    return Section("dictionary_metrics", "A dictionary on held-out text", [KeyValues(items)],
                   {"metrics": dict(m), "spliced": dict(s)})


def spliced_section(spliced: Mapping[str, Any]) -> Section:
    """A saved `SplicedMetrics.to_dict()`: the LM loss with a dictionary spliced in."""
    items = {"hook": f"{spliced['hook_name']} → {spliced['hook_name_out']}", **_spliced_items(spliced)}
    return Section("spliced_metrics", "A dictionary spliced into the model", [KeyValues(items)], dict(spliced))


def _num(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def stack_section(result: Mapping[str, Any]) -> Section:
    """A dictionary stack (`dict train --layers`): run settings and timing, the per-layer table (L0, FVU, dead,
    loss recovered when spliced), FVU and L0 by layer, and every layer's training curve (MSE by step)."""
    table, settings, timing = result["table"], result["settings"], result["timing"]
    layers = [r["layer"] for r in table]
    rows = [[r["layer"], _num(r.get("l0"), ".1f"), _num(r.get("fvu"), ".4f"), _num(r.get("dead_fraction"), ".3f"),
             _num(r.get("dead_fraction_train"), ".3f"), _num(r.get("loss_recovered"), ".3f"),
             _num(r.get("kl_div"), ".4f"), r["hook_name"]] for r in table]
    by_layer, by_layer_data = line_chart(
        {"FVU": (layers, [r.get("fvu") if r.get("fvu") is not None else float("nan") for r in table])},
        title="FVU by layer (held-out tokens)", x_title="layer", markers=True)
    curves = result.get("curves", {})
    mse, mse_data = line_chart({f"layer {la}": ([c["step"] for c in pts], [c["mse"] for c in pts])
                                for la, pts in curves.items() if pts},
                               title="Training MSE by step, one line per layer", x_title="step", log_y=True)
    corpus = settings.get("corpus") or {}
    eval_info = result.get("eval") or {}
    blocks = [
        Text(f"{len(layers)} {settings['kind']}s for `{result.get('model', '?')}` trained together, every "
             "layer's rows taken from the same model forward per batch of text. The table is measured on "
             f"{eval_info.get('n_texts', '?')} texts "
             f"{'held out of training' if eval_info.get('held_out') else 'that training also saw'}; "
             "`recovered` is the fraction of the LM loss kept with that layer's dictionary spliced in place of "
             "its MLP (or hook) against mean-ablating it."),
        KeyValues({"features (d_sae) / activation": f"{settings['d_sae']} / {settings['activation']}"
                   + (f" (k={settings['k']})" if settings.get("k") else ""),
                   "steps x batch": f"{timing['steps']} x {settings['batch_size']} rows per layer",
                   "wall time (model / dictionaries)": f"{timing['wall_s']:.0f} s ({timing['forward_s']:.0f} s / "
                                                       f"{timing['train_s']:.0f} s)",
                   "tokens per second": _num(timing.get("tokens_per_s"), ",.0f"),
                   "model dtype while streaming": corpus.get("model_dtype", "float32"),
                   "positions": positions_text(settings.get("positions") or {}),
                   "trained on": corpus_text(corpus)}),
        Table(["layer", "L0", "FVU", "dead", "dead (train)", "recovered", "KL", "hook"], rows,
              caption="Per layer, on the evaluation texts"),
        by_layer, mse,
    ]
    data = {"table": [dict(r) for r in table], "fvu_by_layer": by_layer_data, "training_mse": mse_data,
            "settings": dict(settings), "timing": dict(timing)}
    return Section("dictionary_stack", "A dictionary stack", blocks, data)


def write_stack_report(directory: str | Path, *, overwrite: bool = False) -> Path:
    """`directory/report.html` for a saved dictionary stack, drawn from its `result.json`."""
    from lmscope.fileio import atomic_write_text
    from lmscope.report.report import Report
    from lmscope.results import read_result

    root = Path(directory)
    result = read_result(root, kind="dictionary_stack")
    report = Report(f"Dictionary stack: {len(result['layers'])} layers", meta={"model": result.get("model")})
    report.add(stack_section(result))
    return atomic_write_text(root / "report.html", report.render_html(), overwrite=overwrite)
