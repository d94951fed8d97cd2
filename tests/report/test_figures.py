"""Tests of the figure helpers: numpy inputs, returned data, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmscope.errors import InputError
from lmscope.report import Figure, Report, Section, bar_chart, heatmap, histogram, line_chart


def test_heatmap_numpy_and_data_in_section() -> None:
    z = np.array([[0.1, -0.2], [0.3, 0.4], [0.5, 0.6]], dtype=np.float32)
    fig, data = heatmap(z, np.array(["h0", "h1"]), ["L0", "L1", "L2"], "succession")
    assert isinstance(fig, Figure)
    assert data["x_labels"] == ["h0", "h1"] and data["y_labels"] == ["L0", "L1", "L2"]
    assert np.allclose(data["z"], z)
    trace = fig.figure["data"][0]
    assert trace["type"] == "heatmap" and trace["zmid"] == 0.0
    report = Report("r")
    report.add(Section("heads", "Heads", [fig], {"succession": data}))
    loaded = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert np.allclose(loaded["sections"]["heads"]["data"]["succession"]["z"], z)


def test_heatmap_default_labels_and_shape_checks() -> None:
    _, data = heatmap([[1, 2, 3]], title="t")
    assert data["x_labels"] == ["0", "1", "2"] and data["y_labels"] == ["0"]
    with pytest.raises(InputError, match=r"^heatmap z: expected a 2-D array, got shape \(3,\)$"):
        heatmap(np.zeros(3))
    with pytest.raises(InputError, match=r"^heatmap labels: got 1 x labels and 2 y labels for z of shape 2x2$"):
        heatmap(np.zeros((2, 2)), ["a"], ["b", "c"])


def test_line_chart_numpy_series_and_log() -> None:
    steps = np.arange(5)
    fig, data = line_chart(
        {"train": (steps, np.linspace(1, 0.1, 5)), "val": ([0, 2, 4], [1.0, 0.5, 0.3])},
        "loss",
        "step",
        "loss",
        log_y=True,
    )
    assert data["series"]["train"]["x"] == [0, 1, 2, 3, 4]
    assert data["series"]["val"]["y"] == [1.0, 0.5, 0.3]
    assert fig.figure["layout"]["yaxis"]["type"] == "log"
    assert len(fig.figure["data"]) == 2
    with pytest.raises(InputError, match=r"^line_chart series 'train': 2 x values but 1 y values$"):
        line_chart({"train": ([0, 1], [1.0])})
    fig, data = line_chart({"top": ([1, 10, 100], [0.5, 0.9, 1.0])}, log_x=True, markers=True)
    assert fig.figure["layout"]["xaxis"]["type"] == "log" and data["log_x"]
    assert fig.figure["data"][0]["mode"] == "lines+markers"


def test_bar_chart_numpy() -> None:
    values = np.array([0.5, 0.25, np.float64(0.125)])
    fig, data = bar_chart(np.array([3, 1, 2]), values, "top", horizontal=True)
    assert data["labels"] == ["3", "1", "2"] and data["values"] == [0.5, 0.25, 0.125]
    assert fig.figure["data"][0]["orientation"] == "h"
    with pytest.raises(InputError, match=r"^bar_chart: 1 labels but 2 values$"):
        bar_chart(["a"], [1, 2])


def test_histogram_bins_counts_and_nonfinite() -> None:
    values = np.concatenate([np.random.default_rng(0).normal(size=1000), [np.nan, np.inf]])
    fig, data = histogram(values, bins=20, title="acts")
    assert len(data["bin_edges"]) == 21 and len(data["counts"]) == 20
    assert sum(data["counts"]) == 1000 and data["n"] == 1000 and data["dropped_nonfinite"] == 2
    assert fig.figure["data"][0]["type"] == "bar"
    with pytest.raises(InputError, match=r"^histogram '': no finite values to bin \(got 1 values\)$"):
        histogram([np.nan])


def test_helpers_accept_python_lists() -> None:
    for fig, _ in (
        heatmap([[1.0, 2.0], [3.0, 4.0]]),
        line_chart({"a": ([1, 2], [3, 4])}),
        bar_chart(["x", "y"], [1, 2]),
        histogram([1, 2, 2, 3], bins=3),
    ):
        json.dumps(fig.figure, allow_nan=False)


def test_helpers_accept_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    _fig, data = heatmap(torch.ones(2, 2, requires_grad=True) * 2)
    assert data["z"] == [[2.0, 2.0], [2.0, 2.0]]
    _, hist = histogram(torch.arange(10.0), bins=2)
    assert hist["counts"] == [5, 5]


def test_report_package_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, lmscope.report; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
