"""Figure helpers: the common charts of lmscope's analyses, as report `Figure` blocks.

Each helper returns `(figure_block, data)`: the block draws the chart, and `data` is the plain JSON the
chart was drawn from, for the section's `data` so every figure's numbers also land in result.json.
Inputs may be Python lists, numpy arrays or torch tensors (torch is never imported here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go  # type: ignore[import-untyped]

from lmscope.errors import InputError
from lmscope.report.blocks import Figure
from lmscope.results import to_list

_FONT = dict(family="system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif")


def _as_array(values: Any, name: str) -> np.ndarray:
    """Return `values` as a float numpy array (torch tensors are detached first)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected numbers, got {type(values).__name__} ({exc})") from exc


def _layout(fig: go.Figure, title: str, x_title: str = "", y_title: str = "", height: int = 420) -> None:
    """Apply lmscope's shared, quiet figure style."""
    fig.update_layout(
        template="plotly_white",
        title=dict(text=title, x=0, xanchor="left", font=dict(size=15)) if title else None,
        font=_FONT,
        height=height,
        margin=dict(l=60, r=20, t=50 if title else 20, b=50),
        xaxis_title=x_title or None,
        yaxis_title=y_title or None,
    )


def heatmap(
    z: Any,
    x_labels: Sequence[Any] | None = None,
    y_labels: Sequence[Any] | None = None,
    title: str = "",
    colorscale: str | None = None,
    *,
    x_title: str = "",
    y_title: str = "",
    zmid: float | None = None,
    caption: str | None = None,
) -> tuple[Figure, dict[str, Any]]:
    """Heatmap of a 2-D array `z` [rows, cols], e.g. layer x head scores.

    With `colorscale=None`, data of both signs gets a diverging scale centred on 0, else Viridis.
    """
    arr = _as_array(z, "heatmap z")
    if arr.ndim != 2:
        raise InputError(f"heatmap z: expected a 2-D array, got shape {tuple(arr.shape)}")
    rows, cols = arr.shape
    xs = [str(v) for v in to_list(x_labels)] if x_labels is not None else [str(i) for i in range(cols)]
    ys = [str(v) for v in to_list(y_labels)] if y_labels is not None else [str(i) for i in range(rows)]
    if len(xs) != cols or len(ys) != rows:
        raise InputError(f"heatmap labels: got {len(xs)} x labels and {len(ys)} y labels for z of shape {rows}x{cols}")
    finite = arr[np.isfinite(arr)]
    diverging = finite.size > 0 and finite.min() < 0 < finite.max()
    if colorscale is None:
        colorscale = "RdBu_r" if diverging else "Viridis"
    if zmid is None and diverging:
        zmid = 0.0
    z_list = to_list(arr)
    fig = go.Figure(go.Heatmap(z=z_list, x=xs, y=ys, colorscale=colorscale, zmid=zmid, hoverongaps=False))
    _layout(fig, title, x_title, y_title, height=max(320, min(900, 80 + 22 * rows)))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    data = {"kind": "heatmap", "title": title, "x_labels": xs, "y_labels": ys, "z": z_list}
    return Figure(fig, caption), data


def line_chart(
    series: Mapping[str, tuple[Any, Any]],
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    log_y: bool = False,
    *,
    log_x: bool = False,
    markers: bool = False,
    caption: str | None = None,
) -> tuple[Figure, dict[str, Any]]:
    """One line per entry of `series` ({name: (xs, ys)}), e.g. training loss curves or accuracy against k."""
    fig = go.Figure()
    out: dict[str, dict[str, list[Any]]] = {}
    for name, pair in series.items():
        xs, ys = pair
        x_list, y_list = to_list(xs), to_list(_as_array(ys, f"line_chart series {name!r}"))
        if len(x_list) != len(y_list):
            raise InputError(f"line_chart series {name!r}: {len(x_list)} x values but {len(y_list)} y values")
        out[str(name)] = {"x": x_list, "y": y_list}
        fig.add_trace(go.Scatter(x=x_list, y=y_list, mode="lines+markers" if markers else "lines", name=str(name)))
    _layout(fig, title, x_title, y_title)
    if log_y:
        fig.update_yaxes(type="log")
    if log_x:
        fig.update_xaxes(type="log")
    fig.update_layout(showlegend=len(out) > 1)
    data = {
        "kind": "line",
        "title": title,
        "x_title": x_title,
        "y_title": y_title,
        "log_y": log_y,
        "log_x": log_x,
        "series": out,
    }
    return Figure(fig, caption), data


def bar_chart(
    labels: Sequence[Any],
    values: Any,
    title: str = "",
    *,
    x_title: str = "",
    y_title: str = "",
    horizontal: bool = False,
    caption: str | None = None,
) -> tuple[Figure, dict[str, Any]]:
    """Bars of `values` named by `labels`, e.g. top-k neuron scores; `horizontal` suits long labels."""
    label_list = [str(v) for v in to_list(labels)]
    value_list = to_list(_as_array(values, "bar_chart values"))
    if len(label_list) != len(value_list):
        raise InputError(f"bar_chart: {len(label_list)} labels but {len(value_list)} values")
    axes = {"x": value_list, "y": label_list, "orientation": "h"} if horizontal else {"x": label_list, "y": value_list}
    fig = go.Figure(go.Bar(**axes))
    height = max(320, min(1200, 60 + 22 * len(label_list))) if horizontal else 420
    _layout(fig, title, x_title, y_title, height=height)
    if horizontal:
        fig.update_yaxes(autorange="reversed", type="category")
    else:
        fig.update_xaxes(type="category")
    data = {"kind": "bar", "title": title, "labels": label_list, "values": value_list}
    return Figure(fig, caption), data


def histogram(
    values: Any,
    bins: int | Sequence[float] = 30,
    title: str = "",
    *,
    x_title: str = "",
    y_title: str = "count",
    log_y: bool = False,
    caption: str | None = None,
) -> tuple[Figure, dict[str, Any]]:
    """Histogram of `values`, binned here with numpy so result.json holds edges and counts, not raw data.

    Non-finite values are dropped and counted in the data as `dropped_nonfinite`.
    """
    arr = _as_array(values, "histogram values").ravel()
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        raise InputError(f"histogram {title!r}: no finite values to bin (got {arr.size} values)")
    counts, edges = np.histogram(finite, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure(go.Bar(x=to_list(centers), y=to_list(counts), width=to_list(np.diff(edges)), marker_line_width=0))
    _layout(fig, title, x_title, y_title)
    fig.update_layout(bargap=0.02)
    if log_y:
        fig.update_yaxes(type="log")
    data = {
        "kind": "histogram",
        "title": title,
        "bin_edges": to_list(edges),
        "counts": to_list(counts),
        "n": int(finite.size),
        "dropped_nonfinite": int(arr.size - finite.size),
    }
    return Figure(fig, caption), data
