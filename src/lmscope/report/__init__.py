"""Self-contained HTML reports: every analysis contributes a `Section`; `Report.write` produces an
offline `report.html` (plotly.js inlined) and a `result.json` holding every section's data.

    from lmscope.report import Report, Section, Table, Text, heatmap

    fig, fig_data = heatmap(scores, x_labels=heads, y_labels=layers, title="Succession score")
    report = Report("Successor heads", meta={"model": "zoo:gpt2-tiny"})
    report.add(Section("succession", "Succession scores", [Text("..."), fig], {"scores": fig_data}))
    report.write("out/")

`Report.write` puts report.html and its result.json (kind "report") through the one writer of result files,
`lmscope.results.write_result`; `lmscope.report.rebuild.rebuild_report(dirs)` (the `lmscope report` command)
draws one report from saved result directories, a section per result from its kind.
"""

from lmscope.report.blocks import Block, Figure, KeyValues, Markdownish, Table, Text
from lmscope.report.figures import bar_chart, heatmap, histogram, line_chart
from lmscope.report.report import Report, Section

__all__ = [
    "Block",
    "Figure",
    "KeyValues",
    "Markdownish",
    "Report",
    "Section",
    "Table",
    "Text",
    "bar_chart",
    "heatmap",
    "histogram",
    "line_chart",
]
