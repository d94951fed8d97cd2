"""`lmscope whitebox train | compare` on tiny models (the zoo's CRATE is never trained here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import run
from lmscope import HookedModel
from lmscope.data.synthetic import generate_corpus
from tiny_models import save_crate_and_gpt


def test_train_a_small_crate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(s.text for s in generate_corpus(400, seed=5)) + "\n")
    args = ["whitebox", "train", "--corpus", str(corpus), "--layers", "1", "--d-model", "32", "--heads", "2",
            "--expansion", "2", "--steps", "3", "--batch-size", "4", "--seq-len", "16", "--out", str(tmp_path / "m")]
    code, out, _ = run(capsys, *args, "--json")
    assert code == 0, out
    summary = json.loads(out)
    model = HookedModel.from_pretrained(str(tmp_path / "m"))
    assert model.cfg.family == "crate" and (model.cfg.n_layers, model.cfg.d_model, model.cfg.d_mlp) == (1, 32, 64)
    card = json.loads((tmp_path / "m" / "zoo_card.json").read_text())
    assert card["train"]["steps"] == 3 and card["heldout_loss"] == summary["heldout_loss"]
    assert card["corpus"]["documents"] == 400
    code, _, err = run(capsys, *args)
    assert code == 2 and "already exists" in err
    code, _, err = run(capsys, "whitebox", "train", "--corpus", str(tmp_path / "none.txt"), "--out",
                       str(tmp_path / "n"))
    assert code == 2 and "no such file" in err


def test_compare_two_saved_models(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    models = save_crate_and_gpt(tmp_path)
    code, _, err = run(capsys, "whitebox", "compare", "--models", models, "--out", str(tmp_path / "x"))
    assert code == 2 and "--corpus" in err and "is not a zoo model" in err  # refused before any work
    args = ["whitebox", "compare", "--models", models, "--corpus", "synthetic", "--sentences", "40",
            "--units-per-layer", "4", "--heldout-samples", "200", "--seed", "1", "--out", str(tmp_path / "cmp")]
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["models"] == models.split(",") and set(shown["relative_improvement"]) == {str(tmp_path / "gpt")}
    saved = json.loads((tmp_path / "cmp" / "result.json").read_text())
    assert saved["per_model"] == shown["per_model"] and len(saved["units"][str(tmp_path / "crate")]) == 8
    assert saved["config"]["corpus_seed"] == 4243 and saved["config"]["records"]["seed"] == 1
    assert saved["config"]["heldout_samples"] == 200
    assert (tmp_path / "cmp" / "report.html").exists()
    code, _, err = run(capsys, *args)
    assert code == 2 and "already exists" in err
    code, _, err = run(capsys, "whitebox", "compare", "--models", str(tmp_path / "crate"))
    assert code == 2 and "at least two" in err


def test_compare_on_the_users_text(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    models = save_crate_and_gpt(tmp_path)
    docs = ["The river rose all night and by morning the bridge was closed to every car and cart in the valley.",
            "She read the letter twice, folded it, and put it back in the drawer without a word."] * 6
    (tmp_path / "prose.txt").write_text("\n".join(docs) + "\n")
    code, out, err = run(capsys, "whitebox", "compare", "--models", models, "--corpus", str(tmp_path / "prose.txt"),
                         "--sentences", "20", "--units-per-layer", "4", "--heldout-samples", "10", "--out",
                         str(tmp_path / "cmp"))
    assert code == 0, err
    assert f"corpus {tmp_path / 'prose.txt'}: 12 documents" in out and "skipped: best_iou (needs word labels" in out
    assert "loss on the corpus" in out and "best IoU" not in out
    saved = json.loads((tmp_path / "cmp" / "result.json").read_text())
    assert saved["corpus"]["source"] == str(tmp_path / "prose.txt") and saved["corpus"]["n_texts_loss"] == 10
    assert set(saved["skipped"]) == {"best_iou"}
    assert all(saved["per_model"][m]["summary"]["all"]["best_iou"]["mean"] is None for m in models.split(","))
    code, _, err = run(capsys, "whitebox", "compare", "--models", models, "--corpus", str(tmp_path / "none.txt"))
    assert code == 2 and "no such file" in err


def test_train_complete_variant_on_the_synthetic_corpus(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "whitebox", "train", "--samples", "300", "--mode", "complete", "--layers", "1",
                         "--d-model", "32", "--heads", "2", "--steps", "2", "--batch-size", "4", "--seq-len", "16",
                         "--lr", "1e-3", "--vocab-size", "1600", "--seed", "1", "--out", str(tmp_path / "c"))
    assert code == 0, err
    assert "CRATE" in out and "held-out loss" in out
    card = json.loads((tmp_path / "c" / "zoo_card.json").read_text())
    assert card["corpus"] == {**card["corpus"], "path": "synthetic", "documents": 300}
    assert card["arch"]["ista_mode"] == "complete" and card["train"]["lr"] == 1e-3 and card["train"]["seed"] == 1
    model = HookedModel.from_pretrained(str(tmp_path / "c"))
    assert model.cfg.d_mlp == 32 and len(model.tokenizer) <= 1600
