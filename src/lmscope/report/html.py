"""The report page: one self-contained, offline HTML document.

No external script, stylesheet or font is referenced; plotly.js is inlined once (only when the page has
figures) and each figure is drawn from JSON embedded next to its placeholder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from lmscope.report.blocks import Figure, esc, format_value

if TYPE_CHECKING:
    from lmscope.report.report import Section

CSS = """
:root { --fg:#1f2328; --muted:#656d76; --bg:#f6f7f9; --card:#fff; --line:#d8dee4; --accent:#2f6feb;
  --code:#eff1f3; }
* { box-sizing: border-box; }
html { scroll-behavior: smooth; }
body { margin:0; background:var(--bg); color:var(--fg); line-height:1.55; font-size:15px;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.wrap { max-width:1100px; margin:0 auto; padding:0 20px 48px; }
header.top { background:var(--card); border-bottom:1px solid var(--line); margin-bottom:24px; }
header.top .wrap { padding-top:22px; padding-bottom:18px; }
header.top h1 { margin:0 0 4px; font-size:26px; font-weight:650; letter-spacing:-0.01em; }
header.top .meta { color:var(--muted); font-size:13px; }
header.top .meta span + span::before { content:"\\00b7"; margin:0 8px; }
nav.toc, section.card { background:var(--card); border:1px solid var(--line); border-radius:10px;
  padding:18px 22px; margin:0 0 20px; box-shadow:0 1px 2px rgba(31,35,40,.04); }
nav.toc h2 { font-size:13px; text-transform:uppercase; letter-spacing:.06em; color:var(--muted);
  margin:0 0 8px; }
nav.toc ol { margin:0; padding-left:22px; columns:2 280px; }
nav.toc li { margin:2px 0; }
a { color:var(--accent); text-decoration:none; }
a:hover { text-decoration:underline; }
section.card h2 { margin:0 0 12px; font-size:20px; font-weight:620; }
section.card h2 a.anchor { color:var(--line); margin-left:8px; font-weight:400; }
section.card h2:hover a.anchor { color:var(--muted); }
section.card > * + * { margin-top:14px; }
figure { margin:0; }
figcaption { color:var(--muted); font-size:13px; margin-top:6px; }
code { background:var(--code); padding:1px 5px; border-radius:4px;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:.9em; }
.text p { margin:0 0 8px; } .text ul { margin:0 0 8px; padding-left:22px; }
.table-scroll { overflow:auto; max-height:520px; border:1px solid var(--line); border-radius:6px; }
table { border-collapse:collapse; width:100%; font-size:13.5px; }
th, td { padding:6px 10px; text-align:left; border-bottom:1px solid var(--line); vertical-align:top;
  white-space:pre-wrap; }
th { position:sticky; top:0; background:#f0f2f5; font-weight:600; }
tbody tr:nth-child(even) { background:#fafbfc; }
tbody tr:hover { background:#eef4ff; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
td.empty { color:var(--muted); text-align:center; }
.kv dl { display:grid; grid-template-columns:max-content 1fr; gap:4px 18px; margin:0; font-size:14px; }
.kv dt { color:var(--muted); } .kv dd { margin:0; font-variant-numeric:tabular-nums; word-break:break-word; }
.lmscope-figure { width:100%; min-height:320px; }
footer { color:var(--muted); font-size:12px; text-align:center; margin-top:28px; }
@media print { body { background:#fff; } nav.toc { display:none; } section.card { break-inside:avoid; } }
"""

# Draws every figure from its embedded JSON; runs after plotly.js has been defined.
DRAW_JS = """
(function () {
  document.querySelectorAll(".lmscope-figure").forEach(function (div) {
    var fig = JSON.parse(document.getElementById(div.dataset.figure).textContent);
    if (window.Plotly) {
      Plotly.newPlot(div, fig.data || [], fig.layout || {}, {responsive: true, displaylogo: false});
    } else {
      div.textContent = "plotly.js did not load; the figure data is in result.json";
    }
  });
})();
"""


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """The plotly.js bundle shipped with the plotly package (read once per process)."""
    from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

    return get_plotlyjs()


def render_page(
    title: str, created: str, sections: Sequence[Section], meta: Mapping[str, Any], version: str | None
) -> str:
    """Return the whole HTML document for the given sections, in order."""
    toc = "".join(f'<li><a href="#section-{esc(s.key)}">{esc(s.title)}</a></li>' for s in sections)
    body: list[str] = []
    has_figures = False
    for section in sections:
        parts = [
            f'<section class="card" id="section-{esc(section.key)}">',
            f'<h2>{esc(section.title)}<a class="anchor" href="#section-{esc(section.key)}">#</a></h2>',
        ]
        for i, block in enumerate(section.blocks):
            has_figures = has_figures or isinstance(block, Figure)
            parts.append(block.to_html(f"{section.key}-{i}"))
        parts.append("</section>")
        body.append("\n".join(parts))
    meta_items = [f"<span>{esc(created)}</span>"]
    meta_items += [f"<span>{esc(k)}: {esc(format_value(v))}</span>" for k, v in meta.items()]
    if version:
        meta_items.append(f"<span>lmscope {esc(version)}</span>")
    toc_html = f'<nav class="toc"><h2>Contents</h2><ol>{toc}</ol></nav>' if sections else ""
    scripts = f"<script>{plotly_js()}</script>\n<script>{DRAW_JS}</script>" if has_figures else ""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f'<meta name="generator" content="lmscope {esc(version or "")}">',
            f"<title>{esc(title)}</title>",
            f"<style>{CSS}</style>",
            "</head><body>",
            f'<header class="top"><div class="wrap"><h1>{esc(title)}</h1>'
            f'<div class="meta">{"".join(meta_items)}</div></div></header>',
            '<main class="wrap">',
            toc_html,
            *body,
            f"<footer>Generated by lmscope{' ' + esc(version) if version else ''} at {esc(created)}. "
            "Section data is in result.json next to this file.</footer>",
            "</main>",
            scripts,
            "</body></html>",
            "",
        ]
    )
