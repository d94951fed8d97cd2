"""`lmscope report DIR... --out OUT`: results saved by analyses, rebuilt into one page whose figures and numbers are
the ones in the result files (every expected value below is read from a result.json, not from the drawing code)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from lmscope.cli.report import report as report_command
from lmscope.errors import InputError
from lmscope.fileio import atomic_write_json
from lmscope.report.rebuild import SECTIONS, circuit_layers, rebuild_report
from lmscope.results import read_result, write_result
from report.built_results import BUILDERS, spliced, succession

SAVED = ("neuron_ranking", "neuron_ablation", "vector_arithmetic", "mod10_features", "heads_in_the_wild",
         "activation_patching", "mediation", "autointerp", "whitebox_comparison", "selectivity")


def _figures(page: str) -> list[dict[str, Any]]:
    blobs = re.findall(r'<script type="application/json" id="[^"]+-json">(.*?)</script>', page, re.S)
    return [json.loads(b) for b in blobs]


def _traces(page: str) -> list[dict[str, Any]]:
    return [trace for fig in _figures(page) for trace in fig.get("data", [])]


def _planted_circuit(directory: Path) -> None:
    from circuits.planted import PROMPT, planted
    from lmscope.circuits import trace_circuit
    from lmscope.circuits.targets import Target

    model, tcs = planted(0.0)
    trace_circuit(model, tcs, PROMPT, Target("feature", layer=1, feature=0, pos=-1), n_iters=3, branches=4,
                  beam=10, threshold=0.0, check=False).save(directory, html="<p>circuit page</p>")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("saved")
    dirs = {}
    for kind in SAVED:
        BUILDERS[kind]().save(root / kind)
        dirs[kind] = root / kind
    acc = BUILDERS["accuracy_at_k"]()
    write_result(root / "evaluation", {**acc.to_dict(), "kind": "neuron_evaluation", "method": "lca",
                                       "selectivity": {"3": BUILDERS["selectivity"]().to_dict()}})
    dirs["neuron_evaluation"] = root / "evaluation"
    old = {k: v for k, v in BUILDERS["head_detectors"]().to_dict().items() if k != "kind"}
    atomic_write_json(root / "old_detectors" / "result.json", old)  # written before result.json named its kind
    dirs["head_detectors"] = root / "old_detectors"
    succession().save(root / "succession")  # no kind in the file until SuccessionResult joins the results layer
    dirs["succession"] = root / "succession"
    spliced().save(root / "spliced")
    dirs["spliced_metrics"] = root / "spliced"
    write_result(root / "dict_eval", {
        "kind": "dictionary_metrics", "hook_name": "blocks.1.ln2.hook_normalized",
        "hook_name_out": "blocks.1.hook_mlp_out",
        "positions": {"prepend_bos": True, "exclude_first": 0},
        "metrics": {"l0": 12.25, "fvu": 0.0625, "dead_fraction": 0.125, "dense_fraction": 0.0},
        "spliced": spliced().to_dict(), "model": "zoo:planted", "dictionary": "tc/",
        "corpus": {"source": "heldout.txt", "n_texts": 40}, "trained_on": {"source": "synthetic", "n_texts": 9}})
    dirs["dictionary_metrics"] = root / "dict_eval"
    write_result(root / "stack", {
        "kind": "dictionary_stack", "model": "zoo:planted", "layers": [0, 1],
        "table": [{"layer": la, "l0": 5.5 + la, "fvu": 0.125 * (la + 1), "dead_fraction": 0.0, "loss_recovered": 0.75,
                   "kl_div": 0.03125, "hook_name": f"blocks.{la}.ln2.hook_normalized"} for la in (0, 1)],
        "curves": {"0": [{"step": 1, "mse": 0.5}, {"step": 2, "mse": 0.25}]},
        "timing": {"steps": 2, "wall_s": 3.0, "forward_s": 1.0, "train_s": 2.0, "tokens_per_s": 1000.0},
        "settings": {"kind": "transcoder", "d_sae": 64, "activation": "relu", "batch_size": 256}})
    dirs["dictionary_stack"] = root / "stack"
    _planted_circuit(root / "circuit")
    dirs["circuit"] = root / "circuit"
    return dirs


@pytest.fixture(scope="module")
def page(saved: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> str:
    app = typer.Typer()
    app.command()(report_command)
    out = tmp_path_factory.mktemp("out") / "report"
    res = CliRunner().invoke(app, [*map(str, saved.values()), "--out", str(out), "--title", "Saved runs"])
    assert res.exit_code == 0, res.output
    assert f"report  {out / 'report.html'}" in res.output
    assert read_result(out)["kind"] == "report"
    return (out / "report.html").read_text()


def test_every_saved_result_gets_its_section_with_its_source(saved: dict[str, Path], page: str) -> None:
    assert "<title>Saved runs</title>" in page
    for kind, directory in saved.items():
        assert f"From <code>{directory / 'result.json'}</code> ({kind}, lmscope " in page
    assert "lmscope an earlier version" in page  # the old detectors file had no version
    assert set(saved) <= set(SECTIONS)


def test_neuron_sections_show_the_files_numbers(saved: dict[str, Path], page: str) -> None:
    ranking = read_result(saved["neuron_ranking"])
    top = ranking["ranking"]
    bars = next(t for t in _traces(page) if t.get("type") == "bar" and t.get("orientation") == "h")
    assert bars["x"] == [e["score"] for e in top] and bars["y"] == [f"{e['point']}:{e['neuron']}" for e in top]
    assert f"{ranking['accuracy']['test']:.3f}" in page
    evaluation = read_result(saved["neuron_evaluation"])
    top_k = next(t for t in _traces(page) if t.get("name") == "top-k")
    assert top_k["x"] == evaluation["ks"] and top_k["y"] == evaluation["top"]
    assert f"<td class=num>{evaluation['selectivity']['3']['selectivity']:.4g}</td>" in page
    ablation = read_result(saved["neuron_ablation"])
    assert f"<td class=num>{ablation['top_accuracy']:.4g}</td><td class=num>{ablation['top_loss']:.4g}</td>" in page


def test_heads_sections_show_the_files_numbers(saved: dict[str, Path], page: str) -> None:
    detectors = read_result(saved["head_detectors"])
    grids = [t["z"] for t in _traces(page) if t.get("type") == "heatmap"]
    for grid in detectors["scores"].values():
        assert grid in grids
    best = detectors["top_heads"]["induction"][0]
    assert f"<td>{best['layer']}.{best['head']}</td><td>{best['score']:.3f}</td>" in page
    succ = read_result(saved["succession"])
    assert succ["scores"] in grids
    assert f"<dt>best head</dt><dd>0.1</dd><dt>succession score</dt><dd>{succ['scores'][0][1]:.3f}</dd>" in page
    arithmetic = read_result(saved["vector_arithmetic"])
    assert f"{arithmetic['overall']:.2f} at k = {arithmetic['k']}" in page
    mod10 = read_result(saved["mod10_features"])
    assert f"{mod10['probe']['accuracy']:.2f} / {mod10['probe']['mean_cosine']:.2f}" in page
    wild = read_result(saved["heads_in_the_wild"])
    won = next(t for t in wild["category_tops"] if t["category"] == "succession")
    assert f"<td>{won['layer']}.{won['head']}</td><td class=num>{won['tokens']}</td>" in page


def test_causal_autointerp_and_whitebox_sections_show_the_files_numbers(saved: dict[str, Path], page: str) -> None:
    patching = read_result(saved["activation_patching"])
    grid = next(t["z"] for t in _traces(page) if t.get("type") == "heatmap" and "head 0" in t.get("x", []))
    assert sorted(v for row in grid for v in row) == sorted(patching["mean_effect"])
    mediation = read_result(saved["mediation"])
    loc = mediation["localization"]["stratified"]
    assert f"<td class=num>{loc['top_k_share']:.4g}</td><td class=num>{loc['gini']:.4g}</td>" in page
    assert f"treatment <code>{mediation['meta']['treatment']}</code>" in page
    auto = read_result(saved["autointerp"])
    s = auto["summary"]["all"]["top_and_random"]
    assert f"{s['mean']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]" in page
    assert auto["units"][0]["explanation"]["text"] in page
    comparison = read_result(saved["whitebox_comparison"])
    assert f"{comparison['per_model']['gpt']['heldout_loss']:.4f}" in page


def test_dictionary_sections_show_the_files_numbers(saved: dict[str, Path], page: str) -> None:
    metrics = read_result(saved["dictionary_metrics"])
    m, s = metrics["metrics"], metrics["spliced"]
    assert f"<dd>{m['l0']:.1f}</dd>" in page
    assert f"<dd>{m['dead_fraction']:.3f} / {m['dense_fraction']:.3f}</dd>" in page
    assert f"<dd>{s['clean_loss']:.4f} / {s['spliced_loss']:.4f} / {s['ablated_loss']:.4f}</dd>" in page
    assert "<dd>heldout.txt (40 texts)</dd>" in page and "all real tokens except BOS" in page
    stack = read_result(saved["dictionary_stack"])
    fvu = next(t for t in _traces(page) if t.get("name") == "FVU")
    assert fvu["x"] == stack["layers"] and fvu["y"] == [r["fvu"] for r in stack["table"]]
    alone = read_result(saved["spliced_metrics"])
    assert page.count(f"<dd>{alone['loss_recovered']:.3f}</dd>") == 2  # the eval's spliced part, and the file alone


def test_the_circuit_section_draws_the_saved_graph(saved: dict[str, Path], page: str) -> None:
    circuit = read_result(saved["circuit"], kind="circuit")
    assert circuit_layers(circuit) == 2  # the planted model has two layers
    assert f"{circuit['target_value']:.4f}" in page
    assert f"{len(circuit['graph']['nodes'])} nodes, {len(circuit['graph']['edges'])} edges" in page
    assert json.loads((saved["circuit"] / "graph.json").read_text())["nodes"] == circuit["graph"]["nodes"]
    assert (saved["circuit"] / "report.html").read_text() == "<p>circuit page</p>"


def test_a_kind_with_no_section_a_whole_report_and_a_broken_file_are_refused_naming_the_dir(
        saved: dict[str, Path], tmp_path: Path) -> None:
    write_result(tmp_path / "odd", {"kind": "something_new", "x": 1})
    with pytest.raises(InputError, match=r"odd: a 'something_new' result has no report section; lmscope report "
                                         r"draws accuracy_at_k, activation_patching"):
        rebuild_report([saved["neuron_ranking"], tmp_path / "odd"])
    from lmscope.report import Report

    Report("whole").write(tmp_path / "whole")
    with pytest.raises(InputError, match=r"whole: holds a whole report \(its report\.html is beside it\)"):
        rebuild_report([tmp_path / "whole"])
    write_result(tmp_path / "broken", {"kind": "neuron_ranking", "method": "lca"})
    with pytest.raises(InputError, match=r"broken/result\.json: not a readable neuron ranking result \(KeyError"):
        rebuild_report([tmp_path / "broken"])
    with pytest.raises(InputError, match="DIR: name at least one result directory"):
        rebuild_report([])


def test_repeated_kinds_get_their_own_keys(saved: dict[str, Path]) -> None:
    built = rebuild_report([saved["selectivity"], saved["selectivity"]])
    assert [s.key for s in built.sections] == ["selectivity", "selectivity-2"]


def test_out_is_checked_before_any_result_is_read(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(report_command)
    (tmp_path / "file").write_text("")
    res = CliRunner().invoke(app, [str(tmp_path / "missing"), "--out", str(tmp_path / "file")])
    assert isinstance(res.exception, InputError) and res.exception.arg == "out_dir"  # the CLI's main names --out
    assert str(res.exception) == f"out_dir: {tmp_path / 'file'} is a file, expected a directory"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.html").write_text("mine")
    res = CliRunner().invoke(app, [str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert isinstance(res.exception, InputError) and "report.html: already exists" in str(res.exception)
    assert (tmp_path / "out" / "report.html").read_text() == "mine"


def test_circuit_layers_counts_from_the_nodes() -> None:
    graph = {"nodes": [{"kind": "feature", "layer": 3}, {"kind": "target", "layer": 9}, {"kind": "embed", "layer": -1}]}
    assert circuit_layers({"graph": graph}) == 4
    assert circuit_layers({"graph": graph, "options": {"layers_without_transcoder": [5]}}) == 6


def test_lmscope_report_through_the_cli(saved: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from cli_runner import run

    code, out, err = run(capsys, "report", str(saved["selectivity"]), "--out", str(tmp_path / "r"), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["sections"] == [{"key": "selectivity", "title": "Selectivity"}]
    sel = read_result(saved["selectivity"])
    assert f"<dd>{sel['selectivity']:.3f}</dd>" in (tmp_path / "r" / "report.html").read_text()
    write_result(tmp_path / "odd", {"kind": "something_new"})
    code, out, err = run(capsys, "report", str(tmp_path / "odd"), "--out", str(tmp_path / "r2"))
    assert code == 2 and out == "" and err.count("\n") == 1 and "odd: a 'something_new' result has no report" in err
    assert not (tmp_path / "r2").exists()


def test_results_saved_by_lmscope_commands_rebuild_into_one_report(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """End to end on the zoo model: `heads succession` and `heads detect` save results, `lmscope report` draws
    both; the heatmaps hold the files' grids and the best heads the files' top heads."""
    from cli_runner import run

    for args in (("succession", "--out", str(tmp_path / "succ")), ("detect", "--seq-len", "10", "--out",
                                                                    str(tmp_path / "det"))):
        code, _, err = run(capsys, "heads", args[0], "zoo:gpt2-tiny", *args[1:])
        assert code == 0, err
    code, _, err = run(capsys, "report", str(tmp_path / "succ"), str(tmp_path / "det"), "--out", str(tmp_path / "r"))
    assert code == 0, err
    page = (tmp_path / "r" / "report.html").read_text()
    grids = [t["z"] for t in _traces(page) if t.get("type") == "heatmap"]
    succ, det = read_result(tmp_path / "succ"), read_result(tmp_path / "det", kind="head_detectors")
    assert succ["kind"] == "succession" and succ["scores"] in grids
    assert all(grid in grids for grid in det["scores"].values())
    best = det["top_heads"]["induction"][0]
    assert f"<td>induction</td><td>{best['layer']}.{best['head']}</td><td>{best['score']:.3f}</td>" in page
