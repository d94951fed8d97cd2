"""`dict train --layers`: a stack from one forward per batch, its per-layer table, read by `lmscope circuit`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import run
from lmscope.results import lmscope_version

PROMPT = "the war lasted from the year 1732 to the year 17"


def test_stack_trains_every_layer_and_circuit_reads_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tcs"
    code, stdout, err = run(capsys, "dict", "train", "zoo:gpt2-tiny", "--layers", "all", "--d-sae", "64",
                            "--tokens", "4096", "--batch-size", "256", "--eval-texts", "8", "--no-spliced",
                            "--model-dtype", "bfloat16", "--out", str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["layer0", "layer1", "layer2", "layer3", "report.html",
                                                     "result.json"]
    result = json.loads((out / "result.json").read_text())
    assert list(result)[:2] == ["kind", "version"] and result["kind"] == "dictionary_stack"
    assert result["version"] == lmscope_version()  # written by the one result writer
    assert result["settings"]["corpus"]["model_dtype"] == "bfloat16"  # streamed in bf16, recorded as such
    cfg = json.loads((out / "layer2" / "cfg.json").read_text())
    assert cfg["dtype"] == "float32" and cfg["corpus"]["model_dtype"] == "bfloat16"  # weights fp32, stream bf16
    assert cfg["provenance"]["dtype"] == "float32"  # made for the float32 model, which circuit then uses
    rows = result["table"]
    assert [r["layer"] for r in rows] == [0, 1, 2, 3]
    assert all(r["hook_name"] == f"blocks.{r['layer']}.ln2.hook_normalized" for r in rows)
    assert all(0 < r["l0"] <= 64 and 0 <= r["fvu"] < 2 for r in rows)
    assert "4 transcoders" in stdout and "one forward per batch" in stdout
    page = (out / "report.html").read_text()
    assert "FVU by layer" in page and "Training MSE by step" in page and "blocks.3.ln2.hook_normalized" in page
    assert f"{rows[2]['fvu']:.4f}" in page and "bfloat16" in page  # the table's own figures, the streaming dtype
    assert all(f"blocks.{la}.ln2.hook_normalized" in stdout for la in range(4))  # the printed table
    code, stdout, err = run(capsys, "circuit", "zoo:gpt2-tiny", "--transcoders", str(out), "--prompt", PROMPT,
                            "--target", "greater-than:32", "--iters", "1", "--branches", "2", "--beam", "4",
                            "--out", str(tmp_path / "circuit"))
    assert code == 0, err
    assert "no transcoder for layers" not in stdout and (tmp_path / "circuit" / "result.json").exists()
    code, _, err = run(capsys, "dict", "train", "zoo:gpt2-tiny", "--layers", "0,9", "--out", str(tmp_path / "x"))
    errors = [line for line in err.splitlines() if line.startswith("lmscope: error:")]
    assert code == 2 and errors == ["lmscope: error: --layers: expected layers in 0..3, got '0,9'"]
    assert "Traceback" not in err and not (tmp_path / "x").exists()
    code, _, err = run(capsys, "dict", "train", "zoo:gpt2-tiny", "--layers", "all", "--model-dtype", "float16",
                       "--out", str(tmp_path / "h"))
    assert code == 2 and "--model-dtype: expected float32 or bfloat16" in err and not (tmp_path / "h").exists()
