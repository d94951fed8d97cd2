"""`lmscope heads ...` on the zoo model: files written as the issue specifies, errors as one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import run
from lmscope import HookedModel
from lmscope.heads import succession_scores

MODEL = "zoo:gpt2-tiny"


def test_succession_writes_scores_and_top_heads(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, "heads", "succession", MODEL, "--out", str(tmp_path), "--threshold", "0.1")
    assert code == 0, err
    d = json.loads((tmp_path / "result.json").read_text())
    expected = succession_scores(HookedModel.from_pretrained(MODEL))
    assert d["scores"] == expected.scores.tolist()
    assert d["top_heads"] == expected.top_heads(0.1)
    assert set(d["top_heads"][0]) == {"layer", "head", "score", "baseline"}
    assert d["input_baseline"]["scores"] == expected.baseline.tolist()
    layer, head = expected.best_head()
    assert f"best successor head {layer}.{head}" in out and "greater-than bias" in out
    assert f"input baseline of layer {layer}: {float(expected.baseline[layer]):.3f}" in out
    code, _, err = run(capsys, "heads", "succession", MODEL, "--out", str(tmp_path))
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1


def test_detect_and_wild(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, "heads", "detect", MODEL, "--seq-len", "10", "--out", str(tmp_path / "d"))
    assert code == 0, err
    d = json.loads((tmp_path / "d" / "result.json").read_text())
    assert set(d["scores"]) == {"previous_token", "duplicate_token", "induction", "copying"}
    assert d["seq_len"] == 10 and "induction: best head" in out
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("after Monday comes Tuesday .\nthe list reads 3 4 5 6 .\n")
    code, out, err = run(capsys, "heads", "wild", MODEL, "--corpus", str(corpus), "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["n_tokens"] == 13 and sum(sum(sum(h) for h in layer) for layer in d["counts"]) == 13


def test_mod10_and_edit(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, "heads", "mod10", MODEL, "--head", "0.3", "--seeds", "1", "--d-sae", "64",
                         "--out", str(tmp_path / "m"))
    assert code == 0, err
    d = json.loads((tmp_path / "m" / "result.json").read_text())
    assert d["head"] == {"layer": 0, "head": 3} and [f["residue"] for f in d["features"]] == list(range(10))
    assert d["settings"]["d_sae"] == 64 and 0.0 <= d["probe"]["accuracy"] <= 1.0
    code, out, err = run(capsys, "heads", "edit", MODEL, "--head", "0.3", "--from", "3", "--to", "7",
                         "--seeds", "1", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["pairs"] == [[3, 7]] and d["n_edits"]["numbers"] == 40  # 3, 13, ..., 193, both variants
    # no --head: the best head; gpt2-tiny has no successor head (MLP0 increments), which the user is told
    code, out, err = run(capsys, "heads", "edit", MODEL, "--from", "3", "--to", "7", "--seeds", "1", "--json")
    assert code == 0 and json.loads(out)["head"] == {"layer": 0, "head": 1}
    assert "note: the best head, 0.1, scores only 0.16 (< 0.4): this model may have no successor head" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["heads", "mod10", MODEL, "--head", "9.9"], "--head: got 9.9"),
    (["heads", "mod10", MODEL, "--head", "x"], "expected LAYER.HEAD"),
    (["heads", "edit", MODEL, "--from", "3"], "give both"),
    (["heads", "edit", MODEL, "--from", "3", "--to", "12"], "--to: got 12"),
    (["heads", "mod10", MODEL, "--seeds", "0"], "--seeds"),
    (["heads", "succession", MODEL, "--mode", "bogus"], "mode"),
])
def test_bad_input_is_one_line(capsys, argv: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
