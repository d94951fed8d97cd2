"""`lmscope heads ...` on the zoo model: files written as the issue specifies, errors as one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import run
from heads.tiny_tokenizers import saved_model
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
    assert "the mean over 8 tasks" in out and "too few pairs" not in out  # every zoo task has >= 10 pairs
    days = next(line.split() for line in out.splitlines() if line.startswith("  days "))
    assert days == ["days", f"{float(expected.per_task['days'][layer, head]):.2f}", "14", "pairs", "0/14", "dropped"]
    assert d["fold_ln"] is True and d["n_pairs"]["days"] == 14 and d["min_pairs"] == 10 and d["thin_tasks"] == []
    code, out, err = run(capsys, "heads", "succession", MODEL, "--no-fold-ln", "--json")
    assert code == 0, err
    raw = succession_scores(HookedModel.from_pretrained(MODEL), fold_ln=False)
    assert json.loads(out)["scores"] == raw.scores.tolist() and json.loads(out)["fold_ln"] is False
    assert raw.scores.tolist() != expected.scores.tolist()  # the zoo model's final LayerNorm is not the identity
    code, _, err = run(capsys, "heads", "succession", MODEL, "--out", str(tmp_path))
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1


def test_detect_and_wild(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, "heads", "detect", MODEL, "--seq-len", "10", "--out", str(tmp_path / "d"))
    assert code == 0, err
    d = json.loads((tmp_path / "d" / "result.json").read_text())
    assert set(d["scores"]) == {"previous_token", "duplicate_token", "induction", "copying"}
    assert d["seq_len"] == 10 and "induction: best head" in out and d["fold_ln"] is True
    assert "copying score: 4/4" in err  # progress lines on stderr (not a terminal here)
    code, out, err = run(capsys, "heads", "detect", MODEL, "--seq-len", "10", "--no-fold-ln", "--json")
    assert code == 0 and json.loads(out)["fold_ln"] is False


def test_wild_on_a_user_file(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    texts = ["after Monday comes Tuesday .", "the list reads 3 4 5 6 .", "the cat saw the cat ."]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n")
    zoo = HookedModel.from_pretrained(MODEL)
    n = sum(len(zoo.to_tokens(t).input_ids[0]) - 1 for t in texts)
    code, out, err = run(capsys, "heads", "wild", MODEL, "--corpus", str(corpus), "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["n_tokens"] == n and sum(sum(sum(h) for h in layer) for layer in d["counts"]) == n
    assert d["corpus"]["source"] == str(corpus) and d["corpus"]["n_documents"] == 3 and d["corpus"]["n_used"] == 3
    tops = {t["category"]: t for t in d["category_tops"]}
    for i, cat in enumerate(d["categories"]):
        per_head = [h[i] for layer in d["counts"] for h in layer]
        assert tops[cat]["n_tokens"] == sum(per_head) and tops[cat]["tokens"] == max(per_head)
    assert tops["succession"]["n_tokens"] >= 4 and tops["copying"]["n_tokens"] >= 2  # Tuesday, 4 5 6; the cat
    code, out, err = run(capsys, "heads", "wild", MODEL, "--corpus", str(corpus), "--samples", "2")
    assert code == 0, err
    assert out.startswith(f"{n - len(zoo.to_tokens(texts[2]).input_ids[0]) + 1} tokens from {corpus}: 3 documents "
                          "(the first 2 of 3 texts)")
    lines = out.splitlines()
    assert lines[1].startswith("top head per category")
    for line, cat in zip(lines[2:7], ("succession", "greater_than", "copying", "acronym", "other"), strict=True):
        assert line.startswith(f"  {cat}")
    assert "no token of this category" in lines[3]  # greater_than: no earlier number of the same width
    assert "(few tokens: < 10)" in lines[2] and "head " in lines[2]
    assert f"direct effects (batch x layer): {zoo.cfg.n_layers}/{zoo.cfg.n_layers}" in err


def test_wild_refuses_a_real_model_without_corpus(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    saved_model(tmp_path / "m")
    code, _, err = run(capsys, "heads", "wild", str(tmp_path / "m"))
    assert code == 2 and "--corpus" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "heads", "wild", MODEL, "--corpus", str(tmp_path / "nope.txt"))
    assert code == 2 and "no such file" in err and len(err.strip().splitlines()) == 1


def test_mod10_and_edit(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, "heads", "mod10", MODEL, "--head", "0.3", "--seeds", "1", "--d-sae", "64",
                         "--out", str(tmp_path / "m"))
    assert code == 0, err
    d = json.loads((tmp_path / "m" / "result.json").read_text())
    assert d["head"] == {"layer": 0, "head": 3} and [f["residue"] for f in d["features"]] == list(range(10))
    from lmscope import HookedModel
    from lmscope.heads.mod10 import mod10_features

    direct = mod10_features(HookedModel.from_pretrained(MODEL), 0, 3, seeds=(1,), d_sae=64)
    assert d["settings"]["d_sae"] == 64 and d["probe"]["accuracy"] == pytest.approx(direct.probe["accuracy"])
    code, out, err = run(capsys, "heads", "edit", MODEL, "--head", "0.3", "--from", "3", "--to", "7",
                         "--seeds", "1", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["pairs"] == [[3, 7]] and d["n_edits"]["numbers"] == 40  # 3, 13, ..., 193, both variants
    # no --head: the best head; gpt2-tiny has no successor head (MLP0 increments), which the user is told
    code, out, err = run(capsys, "heads", "edit", MODEL, "--from", "3", "--to", "7", "--seeds", "1", "--json")
    best = succession_scores(HookedModel.from_pretrained(MODEL))
    layer, head = best.best_head()
    assert code == 0 and json.loads(out)["head"] == {"layer": layer, "head": head}
    assert (f"note: the best head, {layer}.{head}, scores only {float(best.scores[layer, head]):.2f} (< 0.4): this "
            "model may have no successor head") in err


@pytest.mark.parametrize(("argv", "message"), [
    (["heads", "mod10", MODEL, "--head", "9.9"], "--head: got 9.9"),
    (["heads", "mod10", MODEL, "--head", "x"], "expected LAYER.HEAD"),
    (["heads", "edit", MODEL, "--from", "3"], "give both"),
    (["heads", "edit", MODEL, "--from", "3", "--to", "12"], "--to: expected a residue in 0..9, got 12"),
    (["heads", "mod10", MODEL, "--seeds", "0"], "--seeds"),
    (["heads", "succession", MODEL, "--mode", "bogus"], "mode"),
    (["heads", "succession", MODEL, "--min-pairs", "0"], "--min-pairs"),
    (["heads", "edit", MODEL, "--seeds", "0"], "--seeds"),
    (["heads", "wild", MODEL, "--samples", "0"], "--samples"),
    (["heads", "wild", MODEL, "--max-tokens", "1"], "--max-tokens"),
])
def test_bad_input_is_one_line(capsys, argv: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


# --- a real tokenizer's shape: numbers split into digits, words outside the vocabulary ------------------------
def test_digit_split_tokenizer_through_succession_mod10_edit(capsys, monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Only 0-9 are one token (SmolLM2's shape): succession shows each task's pairs and drops and leaves the thin
    tasks out of the score; mod10 and edit refuse in one line, before any scoring or SAE fit."""
    model_dir = saved_model(tmp_path / "m", missing=("Thursday",))
    code, out, err = run(capsys, "heads", "succession", str(model_dir), "--out", str(tmp_path / "s"))
    assert code == 0, err
    assert "Traceback" not in out + err
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    # numbers: 0-9 kept (0 -> 1 ... 8 -> 9), 190 dropped in each variant; whitespace is no token, so the
    # spaced variant is the bare one and counts its drops once more
    assert rows["numbers"].split()[2:6] == ["9", "pairs", "380/400", "dropped"]
    assert rows["numbers"].endswith("too few pairs: not in the score")
    # days: Thursday is [UNK] in both variants; Wed -> Thu and Thu -> Fri go with it, 5 pairs remain
    assert rows["days"].split()[2:8] == ["5", "pairs", "2/14", "dropped", "(2", "unknown)"]
    assert rows["days"].endswith("too few pairs: not in the score")
    assert "too few" not in rows["letters"] and "25 pairs" in rows["letters"]
    assert "the mean over 5 tasks" in out
    bias = next(line for line in out.splitlines() if line.startswith("greater-than bias"))
    assert " days " in bias and bias.endswith("(* too few pairs)") and "letters" in bias
    assert all(part.endswith("*") == part.startswith(("numbers", "days", "day_abbrevs"))
               for part in bias.split(": ", 1)[1].removesuffix(" (* too few pairs)").split(", "))
    d = json.loads((tmp_path / "s" / "result.json").read_text())
    assert d["n_pairs"]["numbers"] == 9 and d["dropped"]["numbers"] == 380 and d["unknown"]["days"] == 2
    assert d["thin_tasks"] == ["numbers", "days", "day_abbrevs"] and d["headline_is_thin"] is False
    assert d["headline_tasks"] == ["number_words", "ordinals", "months", "month_abbrevs", "letters"]

    def no_work(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("scoring started before the tokenizer was checked")

    monkeypatch.setattr("lmscope.heads.succession_scores", no_work)
    monkeypatch.setattr("lmscope.heads.mod10.fit_embedding_sae", no_work)
    for argv in (["heads", "mod10", str(model_dir)], ["heads", "edit", str(model_dir), "--from", "3", "--to", "7"],
                 ["heads", "mod10", str(model_dir), "--head", "1.0"]):
        code, out, err = run(capsys, *argv)
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert "10 single-token numbers (0-9: it splits longer numbers into digits)" in err
        assert "leaves every residue short (per residue: 1, 1, 1, 1, 1, 1, 1, 1, 1, 0)" in err
