"""Blocks: the small pieces a report section is made of (text, tables, figures, key-value lists).

Every block renders itself to an HTML fragment, escaping everything it was given, so a token such as
`<script>` found in a corpus shows up as text and never runs.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lmscope.report._json import script_json
from lmscope.results import json_safe


@runtime_checkable
class Block(Protocol):
    """Anything with `to_html(block_id)`; a section is a list of these."""

    def to_html(self, block_id: str) -> str:
        """Return this block as an HTML fragment; `block_id` is unique in the page."""
        ...


def esc(value: Any) -> str:
    """HTML-escape `str(value)`, quotes included."""
    return html.escape(str(value), quote=True)


def format_value(value: Any) -> str:
    """Format a cell value for display: floats to 4 significant digits, None as an em dash."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(json_safe(value), ensure_ascii=False)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![*\w])\*([^*\s][^*]*)\*(?![*\w])"), r"<em>\1</em>"),
]


def _inline(text: str) -> str:
    """Escape `text`, then apply `code`, **bold** and *italic* (markers survive escaping)."""
    out = esc(text)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


@dataclass
class Text:
    """A few paragraphs of markdown-ish text: blank lines split paragraphs, `- ` lines make a list,
    and `code`, **bold**, *italic* are honoured. Everything else is shown literally."""

    text: str

    def to_html(self, block_id: str) -> str:
        """Render paragraphs and bullet lists."""
        parts: list[str] = []
        for para in re.split(r"\n\s*\n", self.text.strip()):
            lines = [line.strip() for line in para.splitlines() if line.strip()]
            if lines and all(line.startswith(("- ", "* ")) for line in lines):
                items = "".join(f"<li>{_inline(line[2:])}</li>" for line in lines)
                parts.append(f"<ul>{items}</ul>")
            elif lines:
                parts.append(f"<p>{_inline(' '.join(lines))}</p>")
        return f'<div class="text" id="{esc(block_id)}">{"".join(parts)}</div>'


Markdownish = Text


@dataclass
class Table:
    """A table; numeric columns are right-aligned and long tables scroll inside their card."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str | None = None

    def __post_init__(self) -> None:
        self.columns = [str(c) for c in self.columns]
        self.rows = [list(row) for row in self.rows]
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"table row {i} has {len(row)} cells, expected {len(self.columns)}")

    def to_html(self, block_id: str) -> str:
        """Render as a scrollable `<table>` with an optional caption."""
        numeric = [
            bool(self.rows) and all(_is_number(row[j]) or row[j] is None for row in self.rows)
            for j in range(len(self.columns))
        ]
        head = "".join(
            f"<th{' class=num' if num else ''}>{esc(c)}</th>" for c, num in zip(self.columns, numeric, strict=True)
        )
        body = "".join(
            "<tr>"
            + "".join(
                f"<td{' class=num' if num else ''}>{esc(format_value(v))}</td>"
                for v, num in zip(row, numeric, strict=True)
            )
            + "</tr>"
            for row in self.rows
        )
        if not self.rows:
            body = f'<tr><td class="empty" colspan="{len(self.columns)}">no rows</td></tr>'
        caption = f"<figcaption>{_inline(self.caption)}</figcaption>" if self.caption else ""
        return (
            f'<figure class="table" id="{esc(block_id)}"><div class="table-scroll"><table>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{caption}</figure>"
        )


@dataclass
class KeyValues:
    """A short list of labelled values (a model card, run settings, headline metrics)."""

    items: Mapping[str, Any]
    caption: str | None = None

    def to_html(self, block_id: str) -> str:
        """Render as a two-column definition grid."""
        rows = "".join(f"<dt>{esc(key)}</dt><dd>{esc(format_value(value))}</dd>" for key, value in self.items.items())
        caption = f"<figcaption>{_inline(self.caption)}</figcaption>" if self.caption else ""
        return f'<figure class="kv" id="{esc(block_id)}"><dl>{rows}</dl>{caption}</figure>'


@dataclass
class Figure:
    """A plotly figure, kept as its JSON dict and drawn offline by the inlined plotly.js.

    `figure` may be a plotly `go.Figure` or the dict of one (`fig.to_plotly_json()`); it is stored as
    plain JSON data. Use the helpers in `lmscope.report.figures` to build common charts.
    """

    figure: Any
    caption: str | None = None

    def __post_init__(self) -> None:
        fig = self.figure
        if hasattr(fig, "to_json"):
            fig = json.loads(fig.to_json())
        if not isinstance(fig, Mapping):
            raise TypeError(f"Figure expects a plotly figure or its dict, got {type(fig).__name__}")
        self.figure = json_safe(_decode_typed_arrays(json.loads(json.dumps(fig, cls=_plotly_encoder()))))

    def to_html(self, block_id: str) -> str:
        """Render a placeholder div plus the figure JSON; the page script calls `Plotly.newPlot`."""
        bid = esc(block_id)
        caption = f"<figcaption>{_inline(self.caption)}</figcaption>" if self.caption else ""
        return (
            f'<figure class="plot"><div class="lmscope-figure" id="{bid}" data-figure="{bid}-json"></div>'
            f'<script type="application/json" id="{bid}-json">{script_json(self.figure)}</script>'
            f"{caption}</figure>"
        )


def _decode_typed_arrays(obj: Any) -> Any:
    """Turn plotly's base64 typed arrays ({"dtype", "bdata", "shape"}) back into plain lists."""
    if isinstance(obj, dict):
        if isinstance(obj.get("bdata"), str) and isinstance(obj.get("dtype"), str):
            arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=np.dtype(obj["dtype"]))
            if obj.get("shape"):
                arr = arr.reshape([int(n) for n in str(obj["shape"]).split(",")])
            return arr.tolist()
        return {key: _decode_typed_arrays(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_decode_typed_arrays(value) for value in obj]
    return obj


def _plotly_encoder() -> type[json.JSONEncoder]:
    """Plotly's encoder handles numpy and pandas values inside a hand-built figure dict."""
    from plotly.utils import PlotlyJSONEncoder  # type: ignore[import-untyped]

    return PlotlyJSONEncoder
