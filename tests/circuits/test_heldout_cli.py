"""`lmscope circuit --heldout`: graph scores, held-out medians and labels in the summary, result.json and report."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_heldout import word_model

from cli_runner import run
from tiny_models import save_with_random_transcoders

PROMPT = "Monday, Tuesday, Wednesday,"


def scores_by_hand(graph: dict[str, Any]) -> dict[str, Any]:
    """circuit-tracer's graph scores from a saved graph.json, with numpy and the closed form of the influence
    series: `N` = |A| row-normalised, `I = w N (1 - N)^-1`. Constant (`*_bias`) nodes are not inputs; tokens are
    `embed`, errors `error`/`mlp`/`skip`; `rest` nodes are dropped, or counted as errors in the strict variant."""
    kind = {n["id"]: n["kind"] for n in graph["nodes"]}
    constant = {"dict_bias", "attn_bias", "enc_bias", "target_bias"}
    out: dict[str, Any] = {}
    for strict in (False, True):
        ids = [i for i, k in kind.items() if k not in constant and (strict or k != "rest")]
        at = {node: k for k, node in enumerate(ids)}
        A = np.zeros((len(ids), len(ids)))
        for e in graph["edges"]:  # source: the child feeding target, the parent
            if e["source"] in at and e["target"] in at:
                A[at[e["target"]], at[e["source"]]] += abs(e["value"])
        rows = A.sum(1, keepdims=True)
        N = np.divide(A, rows, out=np.zeros_like(A), where=rows > 0)
        w = np.array([float(i == graph["target"]) for i in ids])
        infl = w @ N @ np.linalg.inv(np.eye(len(ids)) - N)
        tokens = infl[[kind[i] == "embed" for i in ids]].sum()
        error = np.array([kind[i] in {"error", "mlp", "skip"} or (strict and kind[i] == "rest") for i in ids])
        errors = infl[error].sum()
        weight = infl + w
        completeness = float(((1 - N[:, error].sum(1)) * weight).sum() / weight.sum())
        if not strict:
            out["replacement"], out["completeness"] = float(tokens / (tokens + errors)), completeness
            continue
        total = infl[rows[:, 0] == 0].sum()  # everything without inputs: tokens, errors, rest, unexpanded
        rest = infl[[kind[i] == "rest" for i in ids]].sum()
        out["replacement_strict"], out["completeness_strict"] = float(tokens / total), completeness
        out["sources"] = {"tokens": tokens / total, "errors": (errors - rest) / total, "rest": rest / total,
                          "unexpanded": (total - errors - tokens) / total}
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("heldout")
    model = word_model()
    return save_with_random_transcoders(model, root, d_sae=24)


def _args(saved: tuple[Path, Path], *extra: str) -> list[str]:
    return ["circuit", str(saved[0]), "--transcoders", str(saved[1]), "--prompt", PROMPT, "--target",
            "logit:Thursday-Monday", "--iters", "3", "--branches", "6", "--beam", "12", "--threshold", "0", *extra]


def test_builtin_heldout_in_summary_result_and_report(saved: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *_args(saved, "--heldout", "days", "--heldout-n", "4", "--out", str(tmp_path)))
    assert code == 0, err
    result = json.loads((tmp_path / "result.json").read_text())
    held = result["heldout"]
    assert held["n"] == 4 and held["source"] == "built-in task days: 4 prompts made from --prompt"
    assert [r["prompt"] for r in held["rows"]] == ["Tuesday, Wednesday, Thursday,", "Wednesday, Thursday, Friday,",
                                                   "Thursday, Friday, Saturday,", "Friday, Saturday, Sunday,"]
    assert held["rows"][0]["target"] == "logit:Friday-Tuesday"
    assert held["median_recovered_frozen"] == pytest.approx(
        statistics.median(r["recovered_frozen"] for r in held["rows"]))
    assert f"median recovered {held['median_recovered']:.3f} live, {held['median_recovered_frozen']:.3f} frozen " \
           "over 4 prompts" in out
    scores = result["scores"]
    by_hand = scores_by_hand(result["graph"])
    for name in ("replacement", "completeness", "replacement_strict", "completeness_strict"):
        assert scores[name] == pytest.approx(by_hand[name], rel=1e-9, abs=1e-12), name
    assert scores["sources"] == pytest.approx(by_hand["sources"], rel=1e-9, abs=1e-12)
    assert by_hand["sources"]["errors"] > 0.01 and by_hand["sources"]["tokens"] > 0.01  # both kinds of input count
    assert f"replacement {scores['replacement']:.3f}, completeness {scores['completeness']:.3f}" in out
    labels = result["labels"]
    assert [line for line in out.splitlines() if line.startswith("LABEL:")] == [f"LABEL: the graph {x}" for x in labels]
    under = [r for r in (held["median_recovered"], held["median_recovered_frozen"]) if r is not None and r < 0.5]
    assert any("held-out" in x for x in labels) == bool(under)
    html = (tmp_path / "report.html").read_text()
    assert "replacement / completeness score" in html and "held-out median fraction recovered" in html
    assert "Tuesday, Wednesday, Thursday," in html  # the held-out table
    assert any(line.startswith("held-out: 4/4 (") for line in err.splitlines())


def test_heldout_file_and_refusals(saved: tuple[Path, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    held = tmp_path / "held.jsonl"
    held.write_text('{"prompt": "Friday, Saturday, Sunday,", "target": "logit:Monday-Friday"}\n'
                    '{"prompt": "Tuesday, Wednesday, Thursday,"}\n')
    code, out, err = run(capsys, *_args(saved, "--heldout", str(held), "--json"))
    assert code == 0, err
    data = json.loads(out)
    assert data["heldout"]["source"] == str(held) and data["heldout"]["n"] == 2
    assert [r["target"] for r in data["heldout"]["rows"]] == ["logit:Monday-Friday", "logit:Thursday-Monday"]
    for extra, message in [(["--heldout", "weeks"], "--heldout: 'weeks' is neither a file nor a built-in task"),
                           (["--heldout", "days", "--heldout-n", "0"], "--heldout-n: expected an integer in 1.."),
                           (["--heldout", "ioi"], "--heldout: ioi: the prompt has no ioi to substitute")]:
        code, out, err = run(capsys, *_args(saved, *extra, "--out", str(tmp_path / "x")))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert "trace" not in err and not (tmp_path / "x").exists()  # refused before any work or output


def test_heldout_flags_are_checked_before_loading_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "no-model")  # neither the model nor the transcoders exist: the flags fail first
    for extra, message in [(["--heldout", "weeks"], "--heldout: 'weeks' is neither a file nor a built-in task"),
                           (["--heldout", "days", "--heldout-n", "-1"], "--heldout-n: expected an integer in 1..")]:
        code, _, err = run(capsys, "circuit", missing, "--transcoders", missing, "--prompt", PROMPT, "--target",
                           "logit:Thursday", *extra)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
