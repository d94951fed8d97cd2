"""CLI options no other test passed on a command line (--overwrite, --json, --allow-model-mismatch, --column,
--mode, --fold-ln, --title, --text/--foil, --balance, --exclude-first, --model), each with its effect, and the
CLI's own one-line refusals. In-process (`cli_runner.run`) on zoo:gpt2-tiny and tiny saved models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from cli_runner import run

MODEL = "zoo:gpt2-tiny"
Capsys = pytest.CaptureFixture[str]


def _refused(capsys: Capsys, *argv: str) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("lmscope: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err  # above it: progress lines only
    return errors[0]


def _overwrite(capsys: Capsys, argv: list[str], out: Path, *extra: str) -> tuple[dict[str, Any], str]:
    """`argv --out OUT` is refused on OUT's stale result.json and accepted with --overwrite, which replaces it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text("{}")
    err = _refused(capsys, *argv, "--out", str(out), *extra)
    assert "already exists" in err and "--overwrite" in err, err
    code, stdout, err = run(capsys, *argv, "--out", str(out), *extra, "--overwrite")
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert result and "kind" in result, result
    return result, stdout


def _other_zoo() -> Any:
    """zoo:gpt2-tiny with one weight changed: the same shapes, another model as far as provenance goes."""
    from lmscope import HookedModel

    model = HookedModel.from_pretrained(MODEL)
    with torch.no_grad():
        model.hf.transformer.h[0].mlp.c_fc.weight[0, 0] += 1.0
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """texts.txt (a few synthetic sentences), an SAE of the zoo model's blocks.1.hook_resid_post saved with no
    model (`anon`) and one saved from another model of the same shape (`other`)."""
    from lmscope.data.synthetic import generate_corpus
    from lmscope.dictionary import DictConfig, Dictionary, save_dictionary

    root = tmp_path_factory.mktemp("cli-options")
    (root / "texts.txt").write_text("".join(s.text + "\n" for s in generate_corpus(24, seed=5)))
    cfg = DictConfig(kind="sae", d_in=128, d_sae=16, hook_name="blocks.1.hook_resid_post")
    torch.manual_seed(0)
    save_dictionary(Dictionary(cfg), root / "anon")
    save_dictionary(Dictionary(cfg), root / "other", model=_other_zoo())
    return root


# ---------------------------------------------------------------- heads

def test_heads_mod10_and_edit_mode_fold_ln_overwrite_json(capsys: Capsys, tmp_path: Path) -> None:
    mod10 = ["heads", "mod10", MODEL, "--head", "0.3", "--seeds", "1", "--d-sae", "64", "--mode", "raw",
             "--fold-ln"]
    result, out = _overwrite(capsys, mod10, tmp_path / "m", "--json")
    assert result["settings"]["mode"] == "raw" and result["settings"]["fold_ln"] is True
    assert json.loads(out)["settings"] == result["settings"] and json.loads(out)["head"] == {"layer": 0, "head": 3}
    edit = ["heads", "edit", MODEL, "--head", "1.0", "--from", "3", "--to", "7", "--seeds", "1", "--mode", "mlp0",
            "--fold-ln"]
    result, _ = _overwrite(capsys, edit, tmp_path / "e")
    assert result["kind"] == "vector_arithmetic" and result["pairs"] == [[3, 7]]
    assert result["head"] == {"layer": 1, "head": 0} and result["n_edits"]["numbers"] == 40


@pytest.mark.parametrize("argv", [
    ["heads", "detect", MODEL, "--seq-len", "10"],
    ["heads", "succession", MODEL],
], ids=["detect", "succession"])
def test_heads_overwrite(capsys: Capsys, tmp_path: Path, argv: list[str]) -> None:
    result, _ = _overwrite(capsys, argv, tmp_path / "r")
    assert result["kind"] in ("head_detectors", "succession")


def test_heads_wild_overwrite(capsys: Capsys, tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("after Monday comes Tuesday .\nthe list reads 3 4 5 6 .\n")
    result, _ = _overwrite(capsys, ["heads", "wild", MODEL, "--corpus", str(tmp_path / "c.txt")], tmp_path / "w")
    assert result["corpus"]["n_documents"] == 2


def test_report_title_and_overwrite(capsys: Capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "heads", "detect", MODEL, "--seq-len", "10", "--out", str(tmp_path / "d"))
    assert code == 0, err
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.html").write_text("stale")
    err = _refused(capsys, "report", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--title", "Heads of zoo")
    assert "report.html" in err and "already exists" in err
    code, _, err = run(capsys, "report", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--title", "Heads of zoo",
                       "--overwrite")
    assert code == 0, err
    assert "<title>Heads of zoo" in (tmp_path / "r" / "report.html").read_text()


# ---------------------------------------------------------------- CLI refusals of its own

def test_cli_refusals(capsys: Capsys, files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    err = _refused(capsys, "dict", "train", MODEL, "--layer", "1", "--d-sae", "4", "--activation", "topk", "--k", "9",
                   "--out", str(tmp_path / "a"))
    assert "--k: expected 1..4 (--d-sae) active features, got 9" in err
    err = _refused(capsys, "dict", "train", MODEL, "--layers", "0,1", "--d-sae", "4", "--activation", "topk",
                   "--out", str(tmp_path / "b"))
    assert "--k: a TopK dictionary needs k" in err
    err = _refused(capsys, "dict", "train", MODEL, "--layer", "1", "--model-dtype", "float8", "--out",
                   str(tmp_path / "c"))
    assert "--model-dtype: expected float32 or bfloat16, got 'float8'" in err
    monkeypatch.setenv("LMSCOPE_HOME", str(tmp_path / "home"))  # a cold cache, shipped weights ignored
    monkeypatch.setenv("LMSCOPE_ZOO_PACKAGED", "0")
    err = _refused(capsys, "zoo", "path", "gpt2-tiny")
    assert "zoo model 'gpt2-tiny' is not trained yet; run: lmscope zoo train gpt2-tiny" in err
    monkeypatch.undo()
    err = _refused(capsys, "dict", "features", str(files / "anon"), "--corpus", str(files / "texts.txt"))
    assert "cfg.json names no model; pass --model" in err
    err = _refused(capsys, "autointerp", "score", "--model", MODEL, "--corpus", str(files / "texts.txt"),
                   "--explainer", "openai", "--out", str(tmp_path / "d"))
    assert "--explainer openai: pass --llm-model" in err


# ---------------------------------------------------------------- dict

def test_dict_features_model_exclude_first_and_mismatch(capsys: Capsys, files: Path) -> None:
    args = ["dict", "features", str(files / "anon"), "--corpus", str(files / "texts.txt"), "--texts", "8",
            "--features", "0,1", "--top-examples", "2", "--json"]
    code, out, err = run(capsys, *args, "--model", MODEL, "--exclude-first", "3")
    assert code == 0, err
    late = json.loads(out)
    code, out, err = run(capsys, *args, "--model", MODEL)
    assert code == 0, err
    every = json.loads(out)
    assert [f["feature"] for f in late] == [f["feature"] for f in every] == [0, 1]
    assert [f["density"] for f in late] != [f["density"] for f in every]  # fewer positions read
    other = ["dict", "features", str(files / "other"), "--model", MODEL, "--corpus", str(files / "texts.txt"),
             "--texts", "8", "--features", "0", "--top-examples", "1"]
    err = _refused(capsys, *other)
    assert "--allow-model-mismatch" in err
    code, _, err = run(capsys, *other, "--allow-model-mismatch")
    assert code == 0, err


def test_dict_eval_exclude_first_and_overwrite(capsys: Capsys, files: Path, tmp_path: Path) -> None:
    args = ["dict", "eval", str(files / "anon"), "--model", MODEL, "--corpus", str(files / "texts.txt"), "--texts",
            "8", "--exclude-first", "2"]
    result, _ = _overwrite(capsys, args, tmp_path / "e")
    assert result["positions"]["exclude_first"] == 2, result


def test_extract_allow_model_mismatch(capsys: Capsys, files: Path, tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_text("the cat sat\nafter Monday comes Tuesday\n")
    args = ["extract", MODEL, "--corpus", str(tmp_path / "s.txt"), "--points",
            f"{files / 'other'}.hook_sae_acts_post"]
    err = _refused(capsys, *args, "--out", str(tmp_path / "refused"))
    assert "--allow-model-mismatch" in err and not (tmp_path / "refused").exists()
    code, out, err = run(capsys, *args, "--out", str(tmp_path / "store"), "--allow-model-mismatch", "--json")
    assert code == 0, err
    assert json.loads(out)["n_rows"] == 7


# ---------------------------------------------------------------- patch, mediate, circuit

def test_patch_overwrite_and_allow_model_mismatch(capsys: Capsys, files: Path, tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("when the senator and the chef went out , the chef gave a book to the\n")
    (tmp_path / "source.txt").write_text("when the senator and the chef went out , the senator gave a book to the\n")
    args = ["patch", MODEL, "--base", str(tmp_path / "base.txt"), "--source", str(tmp_path / "source.txt"),
            "--target", " senator", "--foil", " chef", "--components", "neurons", "--neurons",
            f"dict:{files / 'other'}:0"]
    err = _refused(capsys, *args, "--out", str(tmp_path / "refused"))
    assert "--allow-model-mismatch" in err and not (tmp_path / "refused").exists()
    result, _ = _overwrite(capsys, [*args, "--allow-model-mismatch"], tmp_path / "p")
    assert result["kind"] == "activation_patching" and result["components"] == [f"dict:{files / 'other'}:0"], result


def test_mediate_text_foil_overwrite_and_allow_model_mismatch(capsys: Capsys, files: Path, tmp_path: Path) -> None:
    from lmscope.causal.data import topic_mediation_rows

    rows = [{"sentence": r["text"], "cue": r["toxic_cue"], "topic": r["topic"]}
            for r in topic_mediation_rows(40, seed=0, max_per_cell=4)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["mediate", MODEL, str(tmp_path / "rows.jsonl"), "--text", "sentence", "--treatment", "cue",
            "--confounder", "topic", "--outcome", "logit-diff", "--target", " senator", "--foil", " chef",
            "--components", "mlp,neurons", "--neurons", f"dict:{files / 'other'}:0", "--n-boot", "10"]
    err = _refused(capsys, *args, "--out", str(tmp_path / "refused"))
    assert "--allow-model-mismatch" in err and not (tmp_path / "refused").exists()
    result, _ = _overwrite(capsys, [*args, "--allow-model-mismatch"], tmp_path / "m")
    assert result["components"][-1] == f"dict:{files / 'other'}:0" and result["outcome"] == "logit-diff", result
    assert result["n_treated"] + result["n_control"] == len(rows)  # every row's text read from "sentence"


def test_circuit_overwrite(capsys: Capsys, tmp_path: Path) -> None:
    from tiny_models import save_with_random_transcoders, tiny_hooked_with_tokenizer

    model, tcs = save_with_random_transcoders(tiny_hooked_with_tokenizer(300), tmp_path, d_sae=32)
    args = ["circuit", str(model), "--transcoders", str(tcs), "--prompt", "after Monday comes", "--target",
            "logit:#40-#20", "--iters", "1", "--branches", "2", "--beam", "4", "--no-check"]
    result, _ = _overwrite(capsys, args, tmp_path / "c")
    assert result["kind"] == "circuit" and result["options"]["n_iters"] == 1, result
    assert (tmp_path / "c" / "report.html").exists()


# ---------------------------------------------------------------- neurons

@pytest.fixture(scope="module")
def neuron_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A store of zoo:gpt2-tiny's blocks.0.mlp.hook_post on 40 synthetic samples, and their samples.jsonl (whose
    labels are pos, topic, toxic and task: --column picks one; task labels every word: its succession task or O)."""
    from lmscope import HookedModel
    from lmscope.activations import ExtractConfig, extract
    from lmscope.data.samples import write_jsonl
    from lmscope.data.synthetic import generate_corpus

    root = tmp_path_factory.mktemp("neurons")
    samples = generate_corpus(40, seed=4)
    write_jsonl(samples, root / "samples.jsonl")
    extract(HookedModel.from_pretrained(MODEL), [list(s.words) for s in samples], root / "store",
            ExtractConfig(("blocks.0.mlp.hook_post",)))
    return root / "store", root / "samples.jsonl"


def test_neurons_rank_evaluate_ablate_options(capsys: Capsys, neuron_store: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    store, labels = map(str, neuron_store)
    rank = ["neurons", "rank", store, "--labels", labels, "--column", "task", "--method", "probeless"]
    plain, _ = _overwrite(capsys, rank, tmp_path / "rank")
    assert "O" in plain["per_class"] and "numbers" in plain["per_class"], plain["per_class"].keys()
    code, _, err = run(capsys, *rank, "--balance", "--out", str(tmp_path / "balanced"))
    assert code == 0, err
    balanced = json.loads((tmp_path / "balanced" / "result.json").read_text())
    assert balanced["n_rows"] < plain["n_rows"]  # every class cut to the smallest
    evaluate = ["neurons", "evaluate", store, "--labels", labels, "--column", "task", "--ranking",
                str(tmp_path / "rank"), "--ks", "5"]
    result, out = _overwrite(capsys, evaluate, tmp_path / "eval", "--json")
    shown = json.loads(out)
    assert isinstance(shown, dict) and result["kind"] and set(result["selectivity"]) == {"5", "512"}, result
    ablate = ["neurons", "ablate", MODEL, store, "--labels", labels, "--column", "task", "--ranking",
              str(tmp_path / "rank"), "--k", "5"]
    result, _ = _overwrite(capsys, ablate, tmp_path / "abl")
    assert result["k"] == 5, result


# ---------------------------------------------------------------- whitebox

@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lmscope.data.synthetic import generate_corpus

    path = tmp_path_factory.mktemp("whitebox") / "docs.txt"
    path.write_text("\n".join(s.text for s in generate_corpus(80, seed=5)) + "\n")
    return path


def test_whitebox_train_overwrite_and_refusals(capsys: Capsys, docs: Path, tmp_path: Path) -> None:
    args = ["whitebox", "train", "--corpus", str(docs), "--layers", "1", "--d-model", "16", "--heads", "2",
            "--expansion", "1", "--steps", "1", "--batch-size", "2", "--seq-len", "8", "--out", str(tmp_path / "m")]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "old.txt").write_text("an earlier run")
    err = _refused(capsys, *args)
    assert "already exists" in err and "--overwrite" in err
    code, out, err = run(capsys, *args, "--overwrite", "--json")
    assert code == 0, err
    card = json.loads((tmp_path / "m" / "zoo_card.json").read_text())
    assert card["train"]["steps"] == 1 and card["heldout_loss"] == json.loads(out)["heldout_loss"]
    (tmp_path / "short.txt").write_text("one two three\nfour five\n")
    err = _refused(capsys, *args[:2], "--corpus", str(tmp_path / "short.txt"), "--out", str(tmp_path / "s"))
    assert "--corpus: too little text for windows of 64 tokens" in err


def test_whitebox_train_refuses_an_impossible_model_size(docs: Path, tmp_path: Path) -> None:
    from lmscope.errors import InputError
    from lmscope.whitebox.train import train_crate

    with pytest.raises(InputError, match=r"^model size: n_embd \(30\) must be divisible by n_head \(4\)") as err:
        train_crate(tmp_path / "m", corpus=docs, arch={"n_embd": 30, "n_head": 4}, heldout_fraction=0.5)
    assert "\n" not in str(err.value)


def test_whitebox_compare_overwrite(capsys: Capsys, tmp_path: Path) -> None:
    from tiny_models import save_crate_and_gpt

    models = save_crate_and_gpt(tmp_path, n_layer=1, ista_expansion=1, n_samples=300)
    args = ["whitebox", "compare", "--models", models, "--corpus", "synthetic", "--sentences", "20",
            "--units-per-layer", "2", "--heldout-samples", "40"]
    result, _ = _overwrite(capsys, args, tmp_path / "cmp")
    assert result["models"] == models.split(",") and len(result["units"][str(tmp_path / "crate")]) == 2, result


def test_zoo_train_overwrite_and_json(capsys: Capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command end to end, on the recipe shrunk with zoo.train's own smoke-test knobs (steps, n_samples)."""
    from functools import partial

    from lmscope.model import zoo

    monkeypatch.setattr(zoo, "train", partial(zoo.train, steps=1, n_samples=600))
    out = tmp_path / "z"
    out.mkdir()
    (out / "old.txt").write_text("an earlier model")
    err = _refused(capsys, "zoo", "train", "gpt2-tiny", "--out", str(out), "--json")
    assert "already exists" in err and "--overwrite" in err
    code, stdout, err = run(capsys, "zoo", "train", "gpt2-tiny", "--out", str(out), "--overwrite", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["name"] == "gpt2-tiny" and summary["path"] == str(out) and not (out / "old.txt").exists()
    card = json.loads((out / "zoo_card.json").read_text())
    assert card["train"]["steps"] == 1 and summary["heldout_loss"] == card["heldout_loss"]
