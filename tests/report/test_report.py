"""Tests of the HTML report: order, TOC, offline plotly, escaping, result.json, overwrite refusal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lmscope import __version__
from lmscope.errors import InputError
from lmscope.report import (
    Figure,
    KeyValues,
    Report,
    Section,
    Table,
    Text,
    bar_chart,
    heatmap,
)
from lmscope.report.html import plotly_js

PLOTLY_BANNER = "* plotly.js v"


def _report() -> Report:
    report = Report("Test <report>", meta={"model": "zoo:tiny"})
    fig, fig_data = heatmap(np.arange(6.0).reshape(2, 3), ["a", "b", "c"], ["L0", "L1"], "scores")
    card = KeyValues({"d_model": 8, "n_layers": 2})
    report.add(Section("model_card", "Model card", [card], {"d_model": 8}))
    report.add(Section("heads", "Head scores", [Text("Per-head **scores**."), fig], {"scores": fig_data}))
    report.add(Section("neurons", "Top neurons", [Table(["unit", "score"], [["n:1", 0.5], ["n:2", 0.25]])]))
    return report


def test_sections_render_in_order_with_toc() -> None:
    page = _report().render_html()
    keys = ("model_card", "heads", "neurons")
    positions = [page.index(f'<section class="card" id="section-{key}"') for key in keys]
    assert positions == sorted(positions)
    toc = re.search(r'<nav class="toc">(.*?)</nav>', page, re.S)
    assert toc is not None
    links = re.findall(r'href="#section-([\w.-]+)"', toc.group(1))
    assert links == ["model_card", "heads", "neurons"]
    assert "Test &lt;report&gt;" in page


def test_plotly_inlined_once_and_nothing_external() -> None:
    page = _report().render_html()
    assert page.count(PLOTLY_BANNER) == 1
    assert plotly_js() in page
    assert "Plotly.newPlot" in page
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?(https?:)?//", page, re.I)
    assert "@import" not in page.split("<script>")[0]


def test_report_without_figures_skips_plotly() -> None:
    report = Report("plain")
    report.add(Section("a", "A", [Text("hello")]))
    assert PLOTLY_BANNER not in report.render_html()


def test_table_cells_and_text_are_escaped() -> None:
    report = Report("esc")
    evil = "<script>alert(1)</script>"
    report.add(
        Section(
            "x",
            "Title " + evil,
            [Table(["col" + evil, "v"], [[evil, 1.0]], caption=evil), Text(evil), KeyValues({evil: evil})],
        )
    )
    page = report.render_html()
    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_figure_json_cannot_close_script() -> None:
    fig, data = bar_chart(["</script><script>alert(1)</script>", "b"], [1, 2], "t")
    report = Report("fig")
    report.add(Section("f", "F", [fig], {"bars": data}))
    page = report.render_html()
    assert "</script><script>alert(1)" not in page
    blob = re.search(r'<script type="application/json" id="f-0-json">(.*?)</script>', page, re.S)
    assert blob is not None
    assert json.loads(blob.group(1))["data"][0]["x"][0] == "</script><script>alert(1)</script>"


def test_result_json_round_trips(tmp_path: Path) -> None:
    report = _report()
    paths = report.write(tmp_path)
    assert paths == {"html": tmp_path / "report.html", "json": tmp_path / "result.json"}
    loaded = json.loads(paths["json"].read_text())
    assert (loaded.pop("kind"), loaded.pop("version")) == ("report", __version__)  # added by the one writer
    assert loaded == json.loads(json.dumps(report.to_dict()))
    assert loaded["title"] == "Test <report>"
    assert loaded["created"]
    assert list(loaded["sections"]) == ["model_card", "heads", "neurons"]
    for section in report.sections:
        assert loaded["sections"][section.key]["title"] == section.title
        assert loaded["sections"][section.key]["data"] == json.loads(json.dumps(section.data))
    assert loaded["sections"]["heads"]["data"]["scores"]["z"] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert paths["html"].read_text().startswith("<!DOCTYPE html>")


def test_result_json_is_strict_with_numpy_and_nan(tmp_path: Path) -> None:
    report = Report("nan")
    data = {"arr": np.array([1.5, np.nan, np.inf]), "n": np.int64(3), "t": (1, 2), "p": tmp_path}
    report.add(Section("s", "S", data=data))
    path = report.write(tmp_path)["json"]
    loaded = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    expected = {"arr": [1.5, None, None], "n": 3, "t": [1, 2], "p": str(tmp_path)}
    assert loaded["sections"]["s"]["data"] == expected


@pytest.mark.parametrize("existing", ["report.html", "result.json"])
def test_overwrite_refused_and_file_unchanged(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("mine")
    with pytest.raises(InputError, match="^" + re.escape(f"{tmp_path / existing}: already exists; pass --overwrite")):
        _report().write(tmp_path)
    assert (tmp_path / existing).read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]
    paths = _report().write(tmp_path, overwrite=True)
    assert json.loads(paths["json"].read_text())["title"] == "Test <report>"


def test_write_refuses_file_as_directory(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("x")
    with pytest.raises(InputError, match="^" + re.escape(f"{target}: is a file, expected an output directory") + "$"):
        _report().write(target)


def test_duplicate_key_and_bad_key_refused() -> None:
    report = Report("dup")
    report.add(Section("a", "A"))
    with pytest.raises(InputError, match=r"^report section 'a': a section with this key was already added$"):
        report.add(Section("a", "again"))
    with pytest.raises(InputError, match=r"^section key 'has space': expected letters, digits, '_', '\.' or '-'"):
        Section("has space", "bad")
    assert len(report) == 1 and "a" in report


def test_text_markdownish() -> None:
    html = Text("Use `x<y` and **bold**.\n\n- one\n- two").to_html("t")
    assert "<code>x&lt;y</code>" in html and "<strong>bold</strong>" in html
    assert "<ul><li>one</li><li>two</li></ul>" in html


def test_figure_accepts_plotly_object_and_dict() -> None:
    import plotly.graph_objects as go

    obj = Figure(go.Figure(go.Scatter(x=np.arange(3), y=np.ones(3))))
    from_dict = Figure({"data": [{"type": "bar", "x": np.array([1, 2]), "y": [3, 4]}], "layout": {}})
    assert obj.figure["data"][0]["x"] == [0, 1, 2]
    assert from_dict.figure["data"][0]["x"] == [1, 2]
    json.dumps(obj.figure, allow_nan=False)
