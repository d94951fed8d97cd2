"""`lmscope autointerp score` on a tiny model's store, with labels and a dictionary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cli_runner import run
from lmscope.activations import ExtractConfig, extract
from lmscope.data.synthetic import generate_corpus, write_jsonl
from tiny_models import tiny_hooked_with_tokenizer


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("aicli")
    samples = generate_corpus(60, seed=8)
    write_jsonl(samples, root / "corpus.jsonl")
    extract(tiny_hooked_with_tokenizer(), [list(s.words) for s in samples], root / "store",
            ExtractConfig(("blocks.0.mlp.hook_post", "blocks.1.hook_resid_post")))
    return root / "store", root / "corpus.jsonl"


def test_score_with_labels(capsys: pytest.CaptureFixture[str], store: tuple[Path, Path], tmp_path: Path) -> None:
    st, corpus = store
    args = ["autointerp", "score", str(st), "--points", "blocks.0.mlp.hook_post", "--units-per-point", "4",
            "--labels", str(corpus), "--out", str(tmp_path)]
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert set(shown["summary"]) == {"blocks.0.mlp.hook_post", "all"} and shown["explainer"] == "offline"
    units = json.loads((tmp_path / "result.json").read_text())["units"]
    assert len(units) == 4 and all(u["best_iou_label"].split(":")[0] in ("pos", "task", "topic") for u in units)
    code, out, _ = run(capsys, *args, "--overwrite")
    assert code == 0 and "4 units scored" in out


def test_score_dictionary_features(capsys: pytest.CaptureFixture[str], store: tuple[Path, Path],
                                   tmp_path: Path) -> None:
    from lmscope.dictionary import DictConfig, Dictionary, save_dictionary

    d = Dictionary(DictConfig(kind="sae", d_in=32, d_sae=16, hook_name="blocks.1.hook_resid_post"))
    with torch.no_grad():
        d.b_dec.zero_()
    save_dictionary(d, tmp_path / "sae")
    code, _, err = run(capsys, "autointerp", "score", str(store[0]), "--dict", str(tmp_path / "sae"),
                         "--units-per-point", "3", "--out", str(tmp_path / "r"), "--json")
    assert code == 0, err
    units = json.loads((tmp_path / "r" / "result.json").read_text())["units"]
    assert [u["unit"].rsplit(":", 1)[0] for u in units] == [f"dict:{tmp_path / 'sae'}"] * 3


@pytest.mark.parametrize(("extra", "message"), [
    (["--explainer", "magic"], "--explainer: expected one of"),
    (["--explainer", "openai", "--llm-model", "m"], "pass --llm-url"),
    (["--explainer", "hf"], "pass --llm-model"),
    (["--points", "blocks.9.mlp.hook_post"], "not in the store"),
    (["--units-per-point", "0"], "--units-per-point: expected an integer in 1.."),
])
def test_bad_arguments(capsys: pytest.CaptureFixture[str], store: tuple[Path, Path], tmp_path: Path,
                       extra: list[str], message: str) -> None:
    code, _, err = run(capsys, "autointerp", "score", str(store[0]), "--out", str(tmp_path), *extra)
    assert code == 2 and message in err


def test_misaligned_labels(capsys: pytest.CaptureFixture[str], store: tuple[Path, Path], tmp_path: Path) -> None:
    other = tmp_path / "other.jsonl"
    write_jsonl(generate_corpus(60, seed=9), other)
    code, _, err = run(capsys, "autointerp", "score", str(store[0]), "--labels", str(other), "--out",
                       str(tmp_path / "x"))
    assert code == 2 and "not the store's" in err


def test_conllu_labels_and_seed(capsys: pytest.CaptureFixture[str], store: tuple[Path, Path], tmp_path: Path) -> None:
    from lmscope.data.samples import read_jsonl

    lines = []
    for sample in read_jsonl(store[1]):
        lines += [f"{i + 1}\t{w}\t_\t{t}\t_\t_\t0\t_\t_\t_" for i, (w, t) in enumerate(zip(sample.words, sample.pos,
                                                                                           strict=True))] + [""]
    (tmp_path / "pos.conllu").write_text("\n".join(lines) + "\n")
    picked = []
    for seed in ("0", "1"):
        code, _, err = run(capsys, "autointerp", "score", str(store[0]), "--points", "blocks.0.mlp.hook_post",
                           "--units-per-point", "4", "--labels", str(tmp_path / "pos.conllu"), "--column", "upos",
                           "--seed", seed, "--out", str(tmp_path / seed))
        assert code == 0, err
        units = json.loads((tmp_path / seed / "result.json").read_text())["units"]
        assert all(u["best_iou_label"].startswith("upos:") for u in units)
        picked.append({u["unit"] for u in units})
    assert picked[0] != picked[1]  # the seed draws the sampled units


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 saved as a plain HF directory (not a zoo model: it needs --corpus)."""
    from lmscope.data.tokenizer import save_tokenizer

    root = tmp_path_factory.mktemp("aimodel")
    m = tiny_hooked_with_tokenizer(300)
    m.hf.save_pretrained(root / "m")
    save_tokenizer(m.tokenizer, root / "m")
    return root / "m"


def test_score_a_model_on_the_users_corpus(capsys: pytest.CaptureFixture[str], model_dir: Path,
                                           tmp_path: Path) -> None:
    from lmscope import HookedModel

    docs = ["the shop was open on Monday and the road was closed", "it rained all day",
            "we walked to the lake and back again before dinner, then read until late"] * 5
    (tmp_path / "docs.txt").write_text("\n".join(docs) + "\n")
    tok = HookedModel.from_pretrained(str(model_dir)).tokenizer
    args = ["autointerp", "score", "--model", str(model_dir), "--corpus", str(tmp_path / "docs.txt"), "--points",
            "blocks.0.mlp.hook_post", "--units-per-point", "3", "--context-tokens", "8"]
    code, out, err = run(capsys, *args, "--prepend-bos", "--out", str(tmp_path / "a"), "--json")
    assert code == 0, err
    saved = json.loads((tmp_path / "a" / "result.json").read_text())
    positions = saved["config"]["positions"]
    n_tokens = sum(len(tok(d)["input_ids"]) for d in docs)
    assert positions["prepend_bos"] is True and positions["rows"] == "tokens"
    assert positions["n_rows"] == n_tokens  # every text token once (windows do not overlap), BOS never
    assert positions["n_positions"] == n_tokens + positions["n_contexts"] and positions["n_contexts"] > len(docs)
    assert saved["source"] == str(tmp_path / "docs.txt") and len(saved["units"]) == 3
    code, out, err = run(capsys, *args, "--exclude-first", "1", "--max-texts", "4", "--out", str(tmp_path / "b"))
    assert code == 0, err
    positions = json.loads((tmp_path / "b" / "result.json").read_text())["config"]["positions"]
    assert positions["prepend_bos"] is False and positions["n_contexts"] == 4
    assert positions["n_positions"] - positions["n_rows"] == 4  # the first text token of each record
    assert "3 units scored" in out and "left out: the first 1 text token" in out


def test_score_a_model_with_a_dictionary(capsys: pytest.CaptureFixture[str], model_dir: Path,
                                         tmp_path: Path) -> None:
    from lmscope.dictionary import DictConfig, Dictionary, save_dictionary

    save_dictionary(Dictionary(DictConfig(kind="sae", d_in=32, d_sae=16, hook_name="blocks.1.hook_resid_post")),
                    tmp_path / "sae")
    (tmp_path / "docs.txt").write_text("one two three four five six\nseven eight nine ten\n")
    code, _, err = run(capsys, "autointerp", "score", "--model", str(model_dir), "--corpus",
                       str(tmp_path / "docs.txt"), "--dict", str(tmp_path / "sae"), "--units-per-point", "2",
                       "--out", str(tmp_path / "r"), "--json")
    assert code == 0, err
    units = json.loads((tmp_path / "r" / "result.json").read_text())["units"]
    assert [u["unit"].rsplit(":", 1)[0] for u in units] == [f"dict:{tmp_path / 'sae'}"] * 2


@pytest.mark.parametrize(("extra", "message"), [
    ([], "--corpus"),  # a model that is not a zoo model needs text
    (["--corpus", "synthetic", "--labels", "x.conllu", "--points", "blocks.0.mlp.hook_post"], "--labels"),
    (["--corpus", "synthetic"], "--points"),
    (["--corpus", "nowhere.txt", "--points", "blocks.0.mlp.hook_post"], "no such file"),
    (["--corpus", "synthetic", "--points", "blocks.0.mlp.hook_post", "--context-tokens", "1"], "--context-tokens"),
])
def test_bad_model_arguments(capsys: pytest.CaptureFixture[str], model_dir: Path, tmp_path: Path,
                             extra: list[str], message: str) -> None:
    code, _, err = run(capsys, "autointerp", "score", "--model", str(model_dir), "--out", str(tmp_path), *extra)
    assert code == 2 and message in err, err


def test_store_or_model_not_both(capsys: pytest.CaptureFixture[str], store: tuple[Path, Path], model_dir: Path,
                                 tmp_path: Path) -> None:
    code, _, err = run(capsys, "autointerp", "score", str(store[0]), "--model", str(model_dir), "--out",
                       str(tmp_path))
    assert code == 2 and "not both" in err
    code, _, err = run(capsys, "autointerp", "score", "--out", str(tmp_path))
    assert code == 2 and "give a STORE" in err
    code, _, err = run(capsys, "autointerp", "score", str(store[0]), "--exclude-first", "1", "--out", str(tmp_path))
    assert code == 2 and "--exclude-first: applies with --model" in err
    code, _, err = run(capsys, "autointerp", "score", str(store[0]), "--corpus", "x.txt", "--out", str(tmp_path))
    assert code == 2 and "--corpus: applies with --model" in err


def _perturbed(model):  # type: ignore[no-untyped-def]
    """The same shapes with one weight changed: another model, as far as provenance goes."""
    with torch.no_grad():
        model.hf.transformer.h[0].mlp.c_fc.weight[0, 0] += 1.0
    return model


def test_a_dictionary_from_another_model_is_refused_unless_allowed(
        capsys: pytest.CaptureFixture[str], store: tuple[Path, Path], model_dir: Path, tmp_path: Path) -> None:
    from lmscope import HookedModel
    from lmscope.dictionary import DictConfig, Dictionary, save_dictionary

    cfg = DictConfig(kind="sae", d_in=32, d_sae=16, hook_name="blocks.1.hook_resid_post")
    save_dictionary(Dictionary(cfg), tmp_path / "same", model=tiny_hooked_with_tokenizer())  # the store's model
    save_dictionary(Dictionary(cfg), tmp_path / "other", model=_perturbed(tiny_hooked_with_tokenizer()))
    other_m = _perturbed(HookedModel.from_pretrained(str(model_dir)))
    save_dictionary(Dictionary(cfg), tmp_path / "other_m", model=other_m)
    (tmp_path / "docs.txt").write_text("one two three four five six\nseven eight nine ten\n")
    on_store = ["autointerp", "score", str(store[0]), "--units-per-point", "2"]
    on_model = ["autointerp", "score", "--model", str(model_dir), "--corpus", str(tmp_path / "docs.txt"),
                "--units-per-point", "2", "--dict", str(tmp_path / "other_m")]
    for args in ([*on_store, "--dict", str(tmp_path / "other")], on_model):
        code, _, err = run(capsys, *args, "--out", str(tmp_path / "refused"))
        assert code == 2 and "--dict" in err and "weights" in err and "--allow-model-mismatch" in err, err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "refused").exists()
    for i, args in enumerate(([*on_store, "--dict", str(tmp_path / "other"), "--allow-model-mismatch"],
                              [*on_model, "--allow-model-mismatch"], [*on_store, "--dict", str(tmp_path / "same")])):
        code, _, err = run(capsys, *args, "--out", str(tmp_path / f"ok{i}"))
        assert code == 0 and (tmp_path / f"ok{i}" / "result.json").exists(), err
