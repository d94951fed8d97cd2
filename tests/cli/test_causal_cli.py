"""`lmscope patch` and `lmscope mediate` on a tiny saved model (a local HF directory)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from cli_runner import run
from lmscope import HookedModel
from lmscope.causal import mediate, standard_components
from lmscope.causal.data import topic_mediation_rows
from lmscope.causal.scorers import lexicon_mass
from tiny_models import tiny_hooked_with_tokenizer


def _stages(err: str) -> list[tuple[str, int, int]]:
    """The plain progress lines `stage: i/n (T s)` on stderr."""
    return [(m[1], int(m[2]), int(m[3])) for m in re.finditer(r"^(.+): (\d+)/(\d+) \(\d+ s\)$", err, re.M)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("causal") / "tiny"
    m = tiny_hooked_with_tokenizer(400)
    m.hf.save_pretrained(d)
    m.tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    rows = topic_mediation_rows(60, seed=0, max_per_cell=8)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mediate_writes_effects_and_matches_the_library(model_dir, rows_file, tmp_path, capsys) -> None:  # type: ignore
    out = tmp_path / "med"
    code, stdout, err = run(capsys, "mediate", str(model_dir), str(rows_file), "--treatment", "toxic_cue",
                            "--confounder", "topic", "--components", "heads,mlp,resid", "--n-boot", "40",
                            "--max-pairs", "120", "--outcome", "toxicity", "--out", str(out), "--json")
    assert code == 0, err
    stages = _stages(err)  # stderr is not a terminal here: plain progress lines
    for step in (("source run", 0, 1), ("base run", 1, 1), ("bootstrap", 0, 1), ("bootstrap", 1, 1)):
        assert step in stages, err
    assert any(stage == "patching" and i == n > 0 for stage, i, n in stages), err
    result = json.loads((out / "result.json").read_text())
    assert json.loads(stdout)["effects"] == result["effects"]
    assert (out / "report.html").read_text().count("NIE by layer and component") == 3
    assert set(result["localization"]) == {"unadjusted", "stratified", "entropy_balancing"}
    assert len(result["per_component"]["stratified"]) == 2 * (4 + 2)  # 2 layers x (4 heads + mlp + resid)
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    model = HookedModel.from_pretrained(str(model_dir))
    lib = mediate(model, [r["text"] for r in rows], [r["toxic_cue"] for r in rows], [r["topic"] for r in rows],
                  standard_components(2, 4, "heads,mlp,resid"), lexicon_mass(model), n_boot=40, max_pairs=120)
    assert result["effects"]["stratified"]["nie"]["estimate"] == pytest.approx(lib.nie("stratified").tolist())
    code, _, err = run(capsys, "mediate", str(model_dir), str(rows_file), "--treatment", "toxic_cue",
                       "--confounder", "topic", "--outcome", "toxicity", "--out", str(out))
    assert code == 2 and "already exists" in err and "patching" not in err  # refused before any work


def test_mediate_asks_a_model_outside_the_zoo_for_an_outcome(model_dir, tmp_path, capsys) -> None:  # type: ignore
    from lmscope.cli.causal import default_outcome

    code, out, err = run(capsys, "mediate", str(model_dir), str(tmp_path / "not-read.jsonl"), "--treatment", "t",
                         "--confounder", "c")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1  # before the rows file is even read
    assert "--outcome" in err and "is not a zoo model" in err
    assert all(name in err for name in ("logit-diff", "prob", "--lexicon", "classifier:PATH", "py:MODULE:FUNCTION"))
    assert default_outcome("zoo:gpt2-tiny", None) == "toxicity"  # the synthetic lexicon stays the zoo's default
    assert default_outcome(str(model_dir), "prob") == "prob"


def test_mediate_infers_topics_and_summarises(model_dir, rows_file, tmp_path, capsys) -> None:  # type: ignore
    words = tmp_path / "words.txt"
    words.write_text("the\na\nsenator\n")
    code, stdout, err = run(capsys, "mediate", str(model_dir), str(rows_file), "--treatment", "toxic_cue",
                            "--infer-topics", "nmf", "--n-topics", "3", "--components", "mlp", "--n-boot", "20",
                            "--outcome", "log-toxicity", "--top-k", "1")
    assert code == 0, err
    assert "stratified" in stdout and "top-1 share" in stdout
    assert ("topics (nmf)", 0, 1) in _stages(err) and ("topics (nmf)", 1, 1) in _stages(err)
    code, stdout, err = run(capsys, "mediate", str(model_dir), str(rows_file), "--treatment", "toxic_cue",
                            "--confounder", "topic", "--components", "mlp", "--n-boot", "10", "--max-pairs", "1000",
                            "--outcome", "toxicity-continuation", "--continuation-tokens", "2", "--lexicon",
                            str(words), "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["outcome"] == "toxicity-continuation"
    assert result["components"] == ["blocks.0.hook_mlp_out@-1", "blocks.1.hook_mlp_out@-1"]
    te = result["effects"]["unadjusted"]["te"]["estimate"][0]
    meta = result["meta"]  # every treated x control pair kept: unadjusted TE is the difference of the means
    assert meta["n_pairs"] == result["n_treated"] * result["n_control"]
    assert te == pytest.approx(meta["mean_outcome_treated"] - meta["mean_outcome_control"], abs=1e-6)
    code, stdout, err = run(capsys, "mediate", str(model_dir), str(rows_file), "--treatment", "toxic_cue",
                            "--infer-topics", "kmeans", "--n-topics", "2", "--components", "neurons", "--neurons",
                            "blocks.1.mlp.hook_post:3@-1", "--n-boot", "10", "--outcome", "prob", "--target",
                            " senator", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["components"] == ["blocks.1.mlp.hook_post:3@-1"]
    assert result["meta"]["confounder"] == "inferred topics (kmeans, 2)"


def test_mediate_refuses_bad_input(model_dir, rows_file, tmp_path, capsys) -> None:  # type: ignore
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "the senator", "toxic_cue": 1}\n')
    code, _, err = run(capsys, "mediate", str(model_dir), str(bad), "--treatment", "toxic_cue", "--confounder",
                       "topic", "--outcome", "toxicity")
    assert code == 2 and "bad.jsonl:1: missing field 'topic'" in err
    bad.write_text('{"text": "the senator", "toxic_cue": 1, "topic": "politics"}\nnot json\n')
    code, _, err = run(capsys, "mediate", str(model_dir), str(bad), "--treatment", "toxic_cue", "--confounder",
                       "topic", "--outcome", "toxicity")
    assert code == 2 and "bad.jsonl:2: not valid JSON" in err
    code, _, err = run(capsys, "mediate", str(model_dir), str(tmp_path / "none.jsonl"), "--treatment", "toxic_cue",
                       "--confounder", "topic", "--outcome", "toxicity")
    assert code == 2 and "no such file" in err
    code, _, err = run(capsys, "mediate", str(model_dir), str(rows_file), "--treatment", "toxic_cue",
                       "--outcome", "toxicity")
    assert code == 2 and "give exactly one" in err
    code, _, err = run(capsys, "mediate", str(model_dir), str(rows_file), "--treatment", "topic", "--confounder",
                       "topic", "--outcome", "toxicity")
    assert code == 2 and "expected 0/1" in err
    code, _, err = run(capsys, "mediate", str(model_dir), str(rows_file), "--treatment", "toxic_cue",
                       "--confounder", "topic", "--outcome", "logit-diff", "--target", " senator")
    assert code == 2 and "--foil" in err


def test_patch_logit_diff_and_toxicity(model_dir, tmp_path, capsys, monkeypatch) -> None:  # type: ignore
    base, source = tmp_path / "base.txt", tmp_path / "source.txt"
    base.write_text("the senator voted\nthe soup was hot\n")
    source.write_text("the chef baked\nthe stupid player scored twice in the big match last night\n")
    out = tmp_path / "patch"
    code, stdout, err = run(capsys, "patch", str(model_dir), "--base", str(base), "--source", str(source),
                            "--metric", "logit-diff", "--target", " senator", "--foil", " soup", "--out", str(out),
                            "--json")
    assert code == 0, err
    stages = _stages(err)
    assert stages[:2] == [("source run", 0, 1), ("source run", 1, 1)] and stages[-1] == ("patching", 2, 2)
    result = json.loads(stdout)
    assert len(result["components"]) == 12 and len(result["effects"]) == 2
    assert "Activation patching" in (out / "report.html").read_text()
    resid0 = result["components"].index("blocks.0.hook_resid_pre@-1")
    model = HookedModel.from_pretrained(str(model_dir))
    a, b = model.tokenizer(" senator")["input_ids"][0], model.tokenizer(" soup")["input_ids"][0]
    name = "blocks.0.hook_resid_pre"
    with torch.no_grad():  # layer 0's residual at the last token: the source's last token (and its position)
        _, cache = model.run_with_cache("the chef baked", names=[name])

        def put(t: torch.Tensor, *, hook: object) -> torch.Tensor:
            t = t.clone()
            t[0, -1] = cache[name][0, -1]
            return t

        logits = model.run_with_hooks("the senator voted", hooks=[(name, put)])[0, -1]
    assert result["effects"][0][resid0] == pytest.approx(float(logits[a] - logits[b]) - result["y_base"][0],
                                                         abs=1e-4)
    words = tmp_path / "words.txt"
    words.write_text("senator\nsoup\n")
    code, stdout, err = run(capsys, "patch", str(model_dir), "--base", str(base), "--source", str(source),
                            "--metric", "toxicity", "--lexicon", str(words), "--components", "mlp")
    assert code == 0, err
    assert "toxicity: base" in stdout
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(model.tokenizer),
                                             num_labels=2, pad_token_id=0)).save_pretrained(tmp_path / "clf")
    model.tokenizer.save_pretrained(tmp_path / "clf")
    code, stdout, err = run(capsys, "patch", str(model_dir), "--base", str(base), "--source", str(source),
                            "--metric", f"classifier:{tmp_path / 'clf'}", "--continuation-tokens", "2",
                            "--components", "heads", "--json")
    assert code == 0, err
    assert all(0 < y < 1 for y in json.loads(stdout)["y_base"])  # P(label 1) of each decoded continuation
    (tmp_path / "my_scorer.py").write_text("def first_logit(logits, index):\n    return logits[:, 3]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, stdout, err = run(capsys, "patch", str(model_dir), "--base", str(base), "--source", str(source),
                            "--metric", "py:my_scorer:first_logit", "--components", "mlp", "--json")
    assert code == 0, err
    with torch.no_grad():
        assert json.loads(stdout)["y_base"][0] == pytest.approx(float(model("the senator voted")[0, -1, 3]),
                                                                abs=1e-5)
    code, _, err = run(capsys, "patch", str(model_dir), "--base", str(base), "--source", str(source),
                       "--metric", "py:my_scorer:missing")
    assert code == 2 and "cannot load it" in err
    code, _, err = run(capsys, "patch", str(model_dir), "--base", str(base), "--source", str(source),
                       "--position", "all", "--metric", "prob", "--target", " senator")
    assert code == 2 and "same length" in err
    code, _, err = run(capsys, "patch", str(model_dir), "--base", str(base), "--source", str(source),
                       "--position", "first", "--metric", "toxicity")
    assert code == 2 and "--position" in err


ZOO_BASE = ("when the senator and the chef went to the market , the chef gave a book to the\n"
            "when the senator and the chef went to the park , the chef gave a cake to the\n")
ZOO_SOURCE = ("when the senator and the chef went to the market , the senator gave a book to the\n"
              "when the senator and the chef went to the park , the senator gave a cake to the\n")


def test_patch_method_atp_and_atp_verify_on_the_zoo(tmp_path, capsys) -> None:  # type: ignore
    from lmscope.causal import patch_sweep
    from lmscope.causal.scorers import logit_diff

    base, source = tmp_path / "base.txt", tmp_path / "source.txt"
    base.write_text(ZOO_BASE)
    source.write_text(ZOO_SOURCE)
    args = ["patch", "zoo:gpt2-tiny", "--base", str(base), "--source", str(source), "--metric", "logit-diff",
            "--target", " senator", "--foil", " chef"]
    code, stdout, err = run(capsys, *args, "--method", "atp", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["meta"]["method"] == "attribution" and "verify" not in result["meta"]
    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    lib = patch_sweep(model, ZOO_BASE.splitlines(), ZOO_SOURCE.splitlines(), standard_components(4, 4),
                      logit_diff(model, " senator", " chef"), method="attribution")
    assert result["components"] == lib.components
    assert result["mean_effect"] == pytest.approx(lib.mean_effect.tolist(), abs=1e-5)
    assert ("base run", 1, 1) in _stages(err) and not any(s == "patching" for s, _, _ in _stages(err))
    out = tmp_path / "verified"
    code, stdout, err = run(capsys, *args, "--method", "atp+verify", "--verify-top", "6", "--position", "each",
                            "--components", "heads,mlp", "--out", str(out))
    assert code == 0, err
    saved = json.loads((out / "result.json").read_text())
    n_positions = int(model.to_tokens((ZOO_BASE + ZOO_SOURCE).splitlines()).lengths.min())  # the shortest input
    assert len(saved["components"]) == n_positions * 4 * 5  # every position x 4 layers x (4 heads + mlp)
    verify = saved["meta"]["verify"]
    assert verify["top"] == 6 and verify["k"] == 3 and len(verify["exact_mean_effect"]) == 6
    exact = patch_sweep(model, ZOO_BASE.splitlines(), ZOO_SOURCE.splitlines(), verify["components"],
                        logit_diff(model, " senator", " chef"))
    assert verify["exact_mean_effect"] == pytest.approx(exact.mean_effect.tolist(), abs=1e-5)
    assert verify["max_abs_error"] > 0  # a real (tiny) transformer is not linear in these components
    w = verify["worst"]
    assert "atp vs exact on the top 6: Pearson r " in stdout and f"worst {w['component']} " in stdout
    assert stdout.count("@") >= 6  # the verified components, each with its estimate and exact effect
    html = (out / "report.html").read_text()
    assert "Estimated and exact mean effects of the verified components" in html and "attribution patching" in html
    assert "when patching mlp, by layer and position" in html  # per-position maps of whole sites
    assert any(stage == "verify patching" for stage, _, _ in _stages(err))


def test_patch_refuses_a_bad_method_before_loading_the_model(tmp_path, capsys) -> None:  # type: ignore
    base = tmp_path / "base.txt"
    base.write_text("the senator voted\n")
    args = ["patch", str(tmp_path / "no-model"), "--base", str(base), "--source", str(base), "--target", " a",
            "--foil", " b"]
    for extra, message in ((["--method", "fast"], "--method: got 'fast', expected one of exact, atp, atp+verify"),
                           (["--method", "atp", "--metric", "toxicity-hit"], "has no gradient"),
                           (["--method", "atp+verify", "--verify-top", "0"], "--verify-top"),
                           (["--position", "some"], "expected last, all, each")):
        code, stdout, err = run(capsys, *args, *extra)
        assert code == 2 and stdout == "" and len(err.strip().splitlines()) == 1 and message in err, err


def test_py_plugin_leaves_sys_path_as_it_was_and_help_says_it_runs_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from lmscope.causal.inputs import load_plugin
    from lmscope.errors import InputError

    (tmp_path / "cwd_scorer_j.py").write_text("def score(logits, index):\n    return logits[:, 0] * 2\n")
    (tmp_path / "cwd_other_j.py").write_text("X = 1\n")
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    fn = load_plugin("cwd_scorer_j:score")  # found in the current directory...
    assert fn(torch.tensor([[1.5, 0.0]]), None).tolist() == [3.0]
    assert sys.path == before  # ...which is not left on sys.path
    with pytest.raises(ModuleNotFoundError):
        __import__("cwd_other_j")  # so a later import cannot pick up files from it
    with pytest.raises(InputError, match=r"^outcome: py:cwd_scorer_j:nope: cannot load it"):
        load_plugin("cwd_scorer_j:nope")
    assert sys.path == before
    for command in ("patch", "mediate"):
        code, stdout, _ = run(capsys, command, "--help")
        words = " ".join(w for w in stdout.split() if w != "│")  # rich boxes the help in columns
        assert code == 0 and "runs its code: use only code you trust" in words


def test_patch_a_dictionary_feature_unit(model_dir, tmp_path, capsys) -> None:  # type: ignore
    """An identity SAE at blocks.1.hook_mlp_out (W_enc = W_dec = I, b_dec = -1000, so every code is x + 1000 and
    never clipped): patching its feature 5 is patching coordinate 5 of that hook, so the two effects agree."""
    from tiny_models import save_identity_sae

    d_model = HookedModel.from_pretrained(str(model_dir)).cfg.d_model
    save_identity_sae(d_model, "blocks.1.hook_mlp_out", tmp_path / "sae")
    base, source = tmp_path / "base.txt", tmp_path / "source.txt"
    base.write_text("the senator voted\nthe soup was hot\n")
    source.write_text("the chef baked\nthe player scored twice\n")
    feature, coordinate = f"dict:{tmp_path / 'sae'}:5@-1", "blocks.1.hook_mlp_out:5@-1"
    code, stdout, err = run(capsys, "patch", str(model_dir), "--base", str(base), "--source", str(source),
                            "--metric", "logit-diff", "--target", " senator", "--foil", " soup", "--components",
                            "neurons", "--neurons", f"{feature},{coordinate}", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["components"] == [feature, coordinate]
    by_feature, by_coordinate = zip(*result["effects"], strict=True)
    assert by_feature == pytest.approx(by_coordinate, abs=1e-4) and max(map(abs, by_coordinate)) > 1e-4
