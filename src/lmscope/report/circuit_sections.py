"""Report section for a transcoder circuit: the interactive attribution graph, top paths, and the check.

The graph is a plotly figure: x is the token position (only those the graph uses), y the depth
(embedding, then each layer's attention and MLP, then the target); heads sit at their query position so
an edge from a source token crosses positions; edge colour is the sign and width the size of the
contribution; hover shows values.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go  # type: ignore[import-untyped]

from lmscope.report.blocks import Block, Figure, KeyValues, Table, Text
from lmscope.report.figures import _layout
from lmscope.report.report import Section

_COLORS = {"feature": "#4c78a8", "head": "#f58518", "embed": "#54a24b", "error": "#e45756", "target": "#222222",
           "rest": "#bbbbbb", "mlp": "#b279a2"}


def _depth(node: Mapping[str, Any], n_layers: int) -> float:
    """Embedding 0, attention of layer l at 2l+1, MLP of layer l at 2l+2, the target above everything."""
    kind, layer = node["kind"], node["layer"]
    if kind in ("target", "target_bias"):
        return 2 * n_layers + 1.5
    if kind == "embed":
        return 0.0
    if kind in ("head", "attn_bias"):
        return 2 * layer + 1.0
    if kind == "enc_bias":
        return 2 * layer + 1.6
    return 2 * layer + 2.0


def graph_figure(graph: Mapping[str, Any], tokens: Sequence[str], n_layers: int) -> go.Figure:
    """The attribution graph (`CircuitGraph.to_dict()`) as a plotly figure."""
    nodes = {n["id"]: n for n in graph["nodes"]}
    pos: dict[str, tuple[float, float]] = {}
    slots: dict[tuple[int, float], list[str]] = defaultdict(list)
    for node_id, n in nodes.items():
        if n["kind"] != "rest":
            slots[(n["pos"], _depth(n, n_layers))].append(node_id)
    columns = {p: i for i, p in enumerate(sorted({p for p, _ in slots}))}  # only positions the graph uses
    for (p, y), ids in slots.items():
        for i, node_id in enumerate(sorted(ids, key=lambda k: -abs(nodes[k]["value"]))):
            pos[node_id] = (columns[p] + (i - (len(ids) - 1) / 2) * 0.8 / len(ids), y)
    for node_id, n in nodes.items():
        if n["kind"] == "rest":
            px, py = pos.get(n["of"], (0.0, 0.0))
            pos[node_id] = (px + 0.1, py - 0.45)
    scale = max((abs(e["value"]) for e in graph["edges"]), default=1.0) or 1.0
    fig = go.Figure()
    buckets: dict[tuple[bool, int], tuple[list[float | None], list[float | None]]] = defaultdict(lambda: ([], []))
    for e in graph["edges"]:
        if e["source"] not in pos or e["target"] not in pos:
            continue
        key = (e["value"] >= 0, min(3, int(4 * abs(e["value"]) / scale)))
        xs, ys = buckets[key]
        (x0, y0), (x1, y1) = pos[e["source"]], pos[e["target"]]
        xs += [x0, x1, None]
        ys += [y0, y1, None]
    for (positive, width), (xs, ys) in sorted(buckets.items()):
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                 line=dict(width=1 + 2.5 * width, color="#3b6fb6" if positive else "#c0392b"),
                                 opacity=0.55))
    by_kind: dict[str, list[str]] = defaultdict(list)
    for node_id, n in nodes.items():
        by_kind[n["kind"] if n["kind"] in _COLORS else "bias"].append(node_id)
    vmax = max((abs(n["value"]) for n in nodes.values()), default=1.0) or 1.0
    for kind, ids in sorted(by_kind.items()):
        fig.add_trace(go.Scatter(
            x=[pos[i][0] for i in ids], y=[pos[i][1] for i in ids], mode="markers", name=kind,
            marker=dict(size=[8 + 22 * (abs(nodes[i]["value"]) / vmax) ** 0.5 for i in ids],
                        color=_COLORS.get(kind, "#9d9d9d"), line=dict(width=1, color="white")),
            text=[f"{nodes[i]['label']}<br>contribution {nodes[i]['value']:.4g}"
                  + (f"<br>activation {nodes[i]['activation']:.4g}" if nodes[i].get("activation") is not None else "")
                  for i in ids],
            hovertemplate="%{text}<extra></extra>"))
    levels = [0.0] + [v for layer in range(n_layers) for v in (2 * layer + 1.0, 2 * layer + 2.0)] + [2 * n_layers + 1.5]
    names = ["embed"] + [v for layer in range(n_layers) for v in (f"attn {layer}", f"MLP {layer}")] + ["target"]
    _layout(fig, "Attribution graph (edge width: |contribution|; blue +, red −)", height=520)
    fig.update_xaxes(tickmode="array", tickvals=list(columns.values()),
                     ticktext=[f"{tokens[p]!r} @{p}" if 0 <= p < len(tokens) else str(p) for p in columns],
                     showgrid=False, zeroline=False)
    fig.update_yaxes(tickmode="array", tickvals=levels, ticktext=names, showgrid=True)
    return fig


def circuit_section(result: Mapping[str, Any], n_layers: int, *, key: str = "circuit",
                    title: str = "A feature circuit through transcoders", note: str = "") -> Section:
    """The graph, the check and the top paths of a `CircuitResult.to_dict()`."""
    g, att, rec = result["graph"], result["attribution"], result.get("recovery")
    kv: dict[str, Any] = {
        "prompt": result["prompt"], "target": result["target"]["label"] or result["target"]["kind"],
        "target value (model)": f"{result['target_value']:.4f}",
        "unexplained remainder (value − Σ attributions)": f"{att['remainder']:.2e}",
        "graph": f"{len(g['nodes'])} nodes, {len(g['edges'])} edges, pruned at {g['threshold']:.3g} × |target|",
        "time to build the graph": f"{result['seconds']['build']:.3f} s",
    }
    missing = result.get("options", {}).get("layers_without_transcoder")
    if missing:  # saved before this was recorded: nothing to say
        kv["layers without a transcoder (one opaque MLP leaf each)"] = ", ".join(map(str, missing))
    if rec is not None:  # the frozen fraction leads: it is a share of the target; the live one can pass 1
        kv["fraction of the target recovered by the circuit (norm scales and attention frozen, as in the "
           "attributions)"] = _num(rec["recovered_frozen"], 3)
        kv["target, norms and attention frozen: only the graph's features / none / all but the graph's"] = (
            f"{rec['circuit_frozen']:.4f} / {rec['none_frozen']:.4f} / {_num(rec['without_frozen'])}")
        kv["fraction recovered, live splice (the final LayerNorm rescales a thinned residual; can exceed 1)"] = (
            _num(rec["recovered"], 3))
        kv["target, live splice: clean / only the graph's features / none / all but the graph's"] = (
            f"{rec['clean']:.4f} / {rec['circuit']:.4f} / {rec['none']:.4f} / {_num(rec['without'])}")
    kv.update(_faithfulness(result))
    paths = [[f"{p['value']:.4f}", p["label"]] for p in result["paths"][:12]]
    kinds = sorted(att["by_kind"].items(), key=lambda kv_: -abs(kv_[1]))
    blocks: list[Block] = [
        Text(note or "With LayerNorm scales and attention patterns frozen from the forward pass, the target is an "
             "exact sum: transcoder features (activation × decoder · target), heads at each source position "
             "(pattern × the OV map pulled back onto the target), embeddings, transcoder errors and biases. "
             "A greedy beam search follows the largest terms back; the graph merges the paths it found, and "
             "each node's `rest` holds what the graph leaves out, so nothing is hidden."),
        KeyValues(kv),
        Figure(graph_figure(g, result["tokens"], n_layers)),
        Table(["contribution", "path (target ← ... ← source)"], paths, caption="Top paths"),
        Table(["feature", "activation", "contribution via the graph", "top de-embedding tokens",
               "top logit tokens"],
              [[f["label"], f"{f['activation']:.3f}" if f.get("activation") is not None else "", f"{f['value']:.4f}",
                " ".join(repr(t) for t, _ in f.get("de_embedding", [])),
                " ".join(repr(t) for t, _ in f.get("logit_tokens", []))] for f in result.get("features", [])],
              caption="The graph's largest features. De-embedding: W_E @ W_enc[:, f], the tokens that drive the "
                      "feature directly; logit tokens: W_dec[f] @ W_U, the next tokens it promotes directly; both "
                      "with the norms' gains folded in (MLP input norm into W_enc, final norm into W_U)"),
        Table(["kind", "sum of direct attributions"], [[k, f"{v:.4f}"] for k, v in kinds],
              caption="Direct attributions to the target, by kind"),
    ]
    held = result.get("heldout")
    if held:
        blocks.append(Table(
            ["held-out prompt", "target", "clean", "recovered (frozen)", "recovered (live splice)",
             "features kept / dropped"],
            [[r["prompt"], r["target"], f"{r['clean']:.4f}", _num(r["recovered_frozen"], 3), _num(r["recovered"], 3),
              f"{r['n_features']} / {r['n_dropped']}"] for r in held["rows"]],
            caption=f"The graph's features spliced in alone on prompts the search never saw ({held['source']}); "
                    "features move with the target position"))
    for label in reversed(result.get("labels") or []):
        blocks.insert(1, Text(f"Label: this graph {label}."))
    return Section(key, title, blocks, {"circuit": dict(result)})


def _num(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _faithfulness(result: Mapping[str, Any]) -> dict[str, str]:
    """Key-value rows for the graph scores, the held-out medians and the labels (absent in older results)."""
    kv: dict[str, str] = {}
    sc, held = result.get("scores"), result.get("heldout")
    if sc:
        kv["replacement / completeness score (circuit-tracer's definitions, on the graph as shown; completeness "
           "counts nodes without inputs as complete, so error nodes alone score about 0.5)"] = (
            f"{_num(sc['replacement'], 3)} / {_num(sc['completeness'], 3)}")
        kv["same, counting what the graph leaves out (rest, unexpanded) against it"] = (
            f"{_num(sc['replacement_strict'], 3)} / {_num(sc['completeness_strict'], 3)}")
        if sc.get("sources"):
            kv["where the target's influence ends (strict)"] = ", ".join(
                f"{k} {v:.2f}" for k, v in sc["sources"].items())
    if held:
        kv[f"held-out median fraction recovered, frozen / live splice ({held['n']} prompts)"] = (
            f"{_num(held['median_recovered_frozen'], 3)} / {_num(held['median_recovered'], 3)}")
    secs = result.get("seconds", {})
    if "heldout" in secs:
        kv["time for the check / held-out prompts"] = f"{secs.get('check', 0.0):.2f} s / {secs['heldout']:.2f} s"
    for i, label in enumerate(result.get("labels") or []):
        kv[f"label {i + 1}" if i else "label"] = label
    return kv
