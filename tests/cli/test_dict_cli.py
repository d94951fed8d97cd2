"""`lmscope dict train | eval | features` on the zoo model, and the demo's transcoder section."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from cli_runner import run
from lmscope import HookedModel
from lmscope.cli import main
from lmscope.dictionary import DictConfig, Dictionary, load_dictionary, save_dictionary
from lmscope.dictionary.features import de_embedding
from lmscope.dictionary.recipes import dictionary_hooks, model_corpus, texts_sha256
from lmscope.errors import InputError
from lmscope.results import lmscope_version


def error_line(err: str) -> str:
    """The last line on stderr, after any progress lines: where the CLI puts its one error."""
    lines = err.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dict") / "tc"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(["dict", "train", "zoo:gpt2-tiny", "--layer", "1", "--d-sae", "256", "--tokens", "20000", "--batch-size",
              "512", "--out", str(out), "--json"])
    assert (out / "cfg.json").exists()
    return out


def test_train_writes_a_saelens_transcoder(trained: Path) -> None:
    cfg = json.loads((trained / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.1.ln2.hook_normalized"
    assert cfg["hook_name_out"] == "blocks.1.hook_mlp_out" and cfg["d_sae"] == 256
    assert cfg["metadata"]["model_name"] == "zoo:gpt2-tiny"
    d = load_dictionary(trained)
    assert d.W_enc.shape == (128, 256) and d.W_dec.shape == (256, 128)


def test_eval_and_features(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "dict", "eval", str(trained), "--texts", "60", "--json")
    assert code == 0, err
    result = json.loads(out)
    # by hand: the first 60 synthetic texts one at a time (no padding), rows after BOS and the recorded exclude_first
    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    d = load_dictionary(trained)
    assert model.prepend_bos
    lead = 1 + json.loads((trained / "cfg.json").read_text())["exclude_first"]
    names = ["blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"]
    rows = [model.run_with_cache(t, names=names)[1] for t in model_corpus(None, model, synthetic_texts=60).texts[:60]]
    X = torch.cat([r[names[0]][0, lead:] for r in rows])
    Y = torch.cat([r[names[1]][0, lead:] for r in rows]).double()
    with torch.no_grad():
        y_hat, z = d(X)
    fvu = float(((Y - y_hat.double()) ** 2).sum() / ((Y - Y.mean(0)) ** 2).sum())
    assert result["metrics"]["n_rows"] == X.shape[0]
    assert result["metrics"]["fvu"] == pytest.approx(fvu, rel=1e-4)
    assert result["metrics"]["l0"] == pytest.approx(float((z != 0).sum(-1).double().mean()), rel=1e-3)
    assert fvu < 0.5  # and the dictionary learned something
    s = result["spliced"]
    assert s["clean_loss"] <= s["spliced_loss"] + 0.05 and s["loss_recovered"] > 0.3
    code, out, err = run(capsys, "dict", "features", str(trained), "--features", "0,5", "--top-examples", "2",
                         "--texts", "60", "--json")
    assert code == 0, err
    reports = json.loads(out)
    assert [r["feature"] for r in reports] == [0, 5] and all(len(r["de_embedding"]) == 10 for r in reports)
    code, out, _ = run(capsys, "dict", "features", str(trained), "--texts", "60")
    assert code == 0 and "de-embedding" in out
    code, _, err = run(capsys, "dict", "features", str(trained), "--features", "9999", "--texts", "20")
    assert code == 2
    assert error_line(err) == "lmscope: error: --features: 9999 is out of range (the dictionary has 256 features)"


def test_train_refusals(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "dict", "train", "zoo:gpt2-tiny", "--out", str(trained), "--tokens", "1000")
    assert code == 2
    assert error_line(err) == f"lmscope: error: {trained / 'cfg.json'}: already exists; pass --overwrite to replace it"
    code, _, err = run(capsys, "dict", "train", "zoo:gpt2-tiny", "--layer", "9", "--out", str(trained / "x"))
    assert code == 2 and error_line(err) == "lmscope: error: --layer: expected 0..3, got 9"
    code, _, err = run(capsys, "dict", "train", "zoo:gpt2-tiny", "--activation", "topk", "--out", str(trained / "y"))
    assert code == 2 and error_line(err) == "lmscope: error: --k: a TopK dictionary needs k"


def test_hooks_and_de_embedding_by_hand(trained: Path) -> None:
    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    assert dictionary_hooks(model, "sae", 2) == ("blocks.2.hook_resid_post", "blocks.2.hook_resid_post")
    with pytest.raises(InputError, match=r"^kind: expected sae or transcoder, got 'crosscoder'$"):
        dictionary_hooks(model, "crosscoder", 0)
    d = load_dictionary(trained)
    raw = model.W_E @ d.W_enc[:, 3].detach()
    assert [s for _, s in de_embedding(model, d, 3, k=4, fold=False)] == pytest.approx(raw.topk(4).values.tolist())
    ln = model.adapter.ln2(int(d.cfg.hook_name.split(".")[1])) if "ln2" in d.cfg.hook_name else None
    W = d.W_enc[:, 3].detach() if ln is None else ln.weight.detach() * d.W_enc[:, 3].detach()
    folded = model.W_E @ (W - W.mean() if ln is not None else W)  # the LayerNorm's gain in, then centred
    assert [s for _, s in de_embedding(model, d, 3, k=4)] == pytest.approx(folded.topk(4).values.tolist(), rel=1e-5)


# --- the user's corpus, attention sinks, honest loss recovered ------------------------------------------------
def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def user_trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`dict train zoo:gpt2-tiny --corpus user.txt --exclude-first 1 --reuse 2`, with every token the model was run on
    recorded (HookedModel.run_with_cache spied on), and a held-out file in the same style."""
    root = tmp_path_factory.mktemp("user")
    corpus, heldout = root / "user.txt", root / "heldout.txt"
    corpus.write_text("\n".join(f"my garden has {i} red roses and {i + 1} tulips" for i in range(30)) + "\n")
    heldout.write_text("\n".join(f"my garden has {i} red tulips" for i in range(40, 50)) + "\n")
    seen: list[torch.Tensor] = []
    original = HookedModel.run_with_cache

    def spy(self: HookedModel, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        batch = self.to_tokens(inputs)
        seen.append(batch.input_ids[batch.attention_mask.bool()])
        return original(self, inputs, *args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(HookedModel, "run_with_cache", spy)
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
                contextlib.suppress(SystemExit):
            main(["dict", "train", "zoo:gpt2-tiny", "--layer", "1", "--d-sae", "64", "--tokens", "2048",
                  "--batch-size", "256", "--corpus", str(corpus), "--exclude-first", "1", "--reuse", "2",
                  "--model-dtype", "bfloat16", "--out", str(root / "tc"), "--json"])
    finally:
        mp.undo()
    return {"dir": root / "tc", "corpus": corpus, "heldout": heldout, "seen": torch.cat(seen) if seen else None,
            "out": stdout.getvalue(), "err": stderr.getvalue()}


def test_train_on_a_user_corpus_records_it_and_sees_only_its_tokens(user_trained: dict[str, Any]) -> None:
    corpus: Path = user_trained["corpus"]
    assert (user_trained["dir"] / "cfg.json").exists(), user_trained["err"]
    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    ids = model.tokenizer(_lines(corpus), add_special_tokens=False)["input_ids"]
    user_tokens = {t for row in ids for t in row}
    bos = {model.tokenizer.bos_token_id} if model.prepend_bos else set()
    assert set(user_trained["seen"].tolist()) == user_tokens | bos  # trained on the file's texts, nothing else
    assert model.tokenizer(" Monday", add_special_tokens=False)["input_ids"][0] not in user_tokens
    cfg = json.loads((user_trained["dir"] / "cfg.json").read_text())
    record = cfg["corpus"]
    assert record["source"] == str(corpus) and record["n_documents"] == 30 and record["n_texts"] == 30
    assert record["model_dtype"] == "bfloat16" and cfg["dtype"] == "float32"  # streamed in bf16, trained in fp32
    assert record["sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert record["tokens"] == sum(len(row) - 1 for row in ids)  # the first text token of each is left out
    assert (cfg["exclude_first"], cfg["prepend_bos"]) == (1, model.prepend_bos)
    assert cfg["metadata"]["dataset_path"] == str(corpus)
    assert cfg["metadata"]["seqpos_slice"] == [1 + int(model.prepend_bos), None]
    summary = json.loads(user_trained["out"])
    assert summary["reuse"] == record["reuse"] == 2
    assert summary["passes_over_corpus"] == pytest.approx(2048 / 2 / record["tokens"])  # each row served twice
    assert summary["positions"]["exclude_first"] == 1
    err_lines = user_trained["err"].splitlines()
    assert "loading model: 0/1 (0 s)" in err_lines and any(line.startswith("training: 8/8") for line in err_lines)


def test_eval_and_features_on_held_out_text(user_trained: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    d, heldout = str(user_trained["dir"]), str(user_trained["heldout"])
    code, out, err = run(capsys, "dict", "eval", d, "--corpus", heldout, "--json", "--out", str(tmp_path))
    assert code == 0, err
    result = json.loads(out)
    assert result["kind"] == "dictionary_metrics" and result["version"] == lmscope_version()
    assert result["corpus"]["source"] == heldout and result["trained_on"]["source"] == str(user_trained["corpus"])
    assert result["positions"]["exclude_first"] == 1  # as trained
    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    lengths = [len(r) for r in model.tokenizer(_lines(user_trained["heldout"]), add_special_tokens=False)["input_ids"]]
    assert result["metrics"]["n_rows"] == sum(n - 1 for n in lengths)
    assert json.loads((tmp_path / "result.json").read_text()) == result
    assert "is the file this dictionary was trained on" not in err
    assert "clean and spliced loss: " in err and "mean-ablated loss: " in err
    code, _, err = run(capsys, "dict", "eval", d, "--corpus", heldout, "--out", str(tmp_path))
    assert code == 2 and error_line(err) == f"lmscope: error: {tmp_path / 'result.json'}: already exists; pass " \
                                            "--overwrite (overwrite=True) to replace it"
    code, out, err = run(capsys, "dict", "eval", d, "--corpus", str(user_trained["corpus"]))
    assert code == 0 and "note: " in err and "is the file this dictionary was trained on" in err
    assert "loss recovered" in out and "left out:" in out
    code, out, err = run(capsys, "dict", "features", d, "--corpus", heldout, "--top-examples", "3", "--json")
    assert code == 0, err
    reports = json.loads(out)
    assert reports and all("<|endoftext|>" not in text for r in reports for _, text in r["top_examples"])
    assert "feature activations: " in err


def test_a_real_model_without_corpus_gets_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = _saved_model(tmp_path)
    code, _, err = run(capsys, "dict", "train", str(model_dir), "--out", str(tmp_path / "tc"))
    no_corpus = (f"lmscope: error: --corpus: {model_dir} is not a zoo model, so give it your own text (a file: "
                 "plain text or JSONL, one document per line), or 'synthetic' to use lmscope's synthetic corpus "
                 "anyway\n")
    assert code == 2 and err == no_corpus
    d = _saved_dictionary(model_dir, tmp_path / "d")
    for command in ("eval", "features"):
        code, _, err = run(capsys, "dict", command, str(d))
        assert code == 2 and err == no_corpus, command
    code, _, err = run(capsys, "dict", "eval", str(d), "--corpus", str(tmp_path / "missing.txt"))
    assert code == 2 and err == f"lmscope: error: --corpus: {tmp_path / 'missing.txt'}: no such file (expected a " \
                                "text or JSONL file, or 'synthetic')\n"


def test_eval_says_undefined_where_ablation_helps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmscope.data.synthetic import generate_corpus

    model_dir = _saved_model(tmp_path, harmful=True)
    d = _saved_dictionary(model_dir, tmp_path / "d")
    text = tmp_path / "heldout.txt"
    text.write_text("\n".join(s.text for s in generate_corpus(12, seed=1)) + "\n")
    code, out, err = run(capsys, "dict", "eval", str(d), "--corpus", str(text))
    assert code == 0, err
    assert "loss recovered undefined: mean-ablating blocks.1.hook_mlp_out does not raise the loss" in out
    code, out, _ = run(capsys, "dict", "eval", str(d), "--corpus", str(text), "--json")
    s = json.loads(out)["spliced"]
    assert s["loss_recovered"] is None and s["ablated_loss"] < s["clean_loss"]
    assert s["loss_recovered_note"].startswith("undefined")


def _saved_model(root: Path, harmful: bool = False) -> Path:
    """zoo:gpt2-tiny written as a plain HF directory (not a zoo: name, so no synthetic default); `harmful`:
    block 1's MLP output negated and doubled, so mean-ablating it lowers the loss (9.2 -> 2.4 nats)."""
    m = HookedModel.from_pretrained("zoo:gpt2-tiny")
    if harmful:
        with torch.no_grad():
            m.hf.transformer.h[1].mlp.c_proj.weight.mul_(-2.0)
            m.hf.transformer.h[1].mlp.c_proj.bias.mul_(-2.0)
    out = root / ("harmful" if harmful else "model")
    m.hf.save_pretrained(out)
    m.tokenizer.save_pretrained(out)
    return out


def _saved_dictionary(model_dir: Path, out: Path) -> Path:
    cfg = DictConfig(kind="transcoder", d_in=128, d_sae=32, hook_name="blocks.1.ln2.hook_normalized",
                     hook_name_out="blocks.1.hook_mlp_out", model_id=str(model_dir))
    return save_dictionary(Dictionary(cfg, generator=torch.Generator().manual_seed(0)), out)


@pytest.mark.parametrize("bos", [True, False])
def test_prepend_bos_is_recorded_and_eval_tokenizes_as_trained(bos: bool, user_trained: dict[str, Any],
                                                               tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    flag = "--prepend-bos" if bos else "--no-prepend-bos"
    code, _, err = run(capsys, "dict", "train", "zoo:gpt2-tiny", flag, "--corpus", str(user_trained["corpus"]),
                       "--layer", "1", "--d-sae", "16", "--tokens", "512", "--batch-size", "256", "--out",
                       str(tmp_path / "tc"))
    assert code == 0, err
    cfg = json.loads((tmp_path / "tc" / "cfg.json").read_text())
    assert cfg["prepend_bos"] is bos and cfg["metadata"]["seqpos_slice"] == [int(bos), None]
    code, out, err = run(capsys, "dict", "eval", str(tmp_path / "tc"), "--corpus", str(user_trained["heldout"]),
                         "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["positions"]["prepend_bos"] is bos  # whatever the zoo model's default, as in training
    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    lengths = [len(r) for r in model.tokenizer(_lines(user_trained["heldout"]), add_special_tokens=False)["input_ids"]]
    assert result["metrics"]["n_rows"] == sum(lengths)  # every text token, and never a BOS row


def test_train_stack_all_layers_table_and_circuit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`dict train --layers all`: one subdirectory per layer that `lmscope circuit --transcoders` reads, a
    per-layer table printed and in result.json (with curves), the refusals before any work."""
    out = tmp_path / "stack"
    code, stdout, err = run(capsys, "dict", "train", "zoo:gpt2-tiny", "--layers", "all", "--d-sae", "64",
                            "--tokens", "2048", "--batch-size", "256", "--eval-texts", "4", "--out", str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if (p / "cfg.json").exists()) == [f"layer{i}" for i in range(4)]
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["layer", "L0", "FVU"])
    assert [int(line.split()[0]) for line in lines[header + 1:header + 5]] == [0, 1, 2, 3]
    result = json.loads((out / "result.json").read_text())
    assert result["kind"] == "dictionary_stack" and result["layers"] == [0, 1, 2, 3]
    assert [r["layer"] for r in result["table"]] == [0, 1, 2, 3]
    assert [c["step"] for c in result["curves"]["2"]] == list(range(8))  # 2048 / 256 steps, all kept
    assert result["eval"] == {"n_texts": 4, "held_out": True, "spliced": True}
    # the table by hand on the 4 held-out texts: the last 4 of the synthetic corpus the run drew (the training
    # texts' recorded hash says it is the same corpus), one text at a time, rows after the BOS
    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    texts = model_corpus(None, model, synthetic_texts=204, seed=100).texts  # max(200, --tokens // 10), seed + 100
    trained_on = json.loads((out / "layer0" / "cfg.json").read_text())["corpus"]
    assert trained_on["texts_sha256"] == texts_sha256(texts[:-4])
    for r in result["table"]:
        d = load_dictionary(out / f"layer{r['layer']}")
        names = [d.cfg.hook_name, d.cfg.hook_name_out]
        lead = 1 + d.cfg.exclude_first
        caches = [model.run_with_cache(t, names=names)[1] for t in texts[-4:]]
        X = torch.cat([c[names[0]][0, lead:] for c in caches])
        Y = torch.cat([c[names[1]][0, lead:] for c in caches]).double()
        with torch.no_grad():
            y_hat, z = d(X)
        assert r["fvu"] == pytest.approx(float(((Y - y_hat.double()) ** 2).sum() / ((Y - Y.mean(0)) ** 2).sum()),
                                         rel=1e-4)
        assert r["l0"] == pytest.approx(float((z != 0).sum(-1).double().mean()), rel=1e-3)
        assert r["loss_recovered"] is not None
    cfg = json.loads((out / "layer3" / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.3.ln2.hook_normalized"
    code, _, err = run(capsys, "circuit", "zoo:gpt2-tiny", "--transcoders", str(out), "--prompt",
                       "from the year 1732 to the year 17", "--target", "logit:40-20", "--iters", "1", "--no-check")
    assert code == 0, err
    code, _, err = run(capsys, "dict", "train", "zoo:gpt2-tiny", "--layers", "all", "--out", str(out))
    assert code == 2
    assert error_line(err) == f"lmscope: error: {out / 'result.json'}: already exists; pass --overwrite " \
                              "(overwrite=True) to replace it"
    code, _, err = run(capsys, "dict", "train", "zoo:gpt2-tiny", "--layers", "0,9", "--out", str(tmp_path / "x"))
    assert code == 2 and error_line(err) == "lmscope: error: --layers: expected layers in 0..3, got '0,9'"
    code, _, err = run(capsys, "dict", "train", "zoo:gpt2-tiny", "--layers", "0,1", "--kind", "sae", "--hook",
                       "blocks.0.hook_resid_mid", "--out", str(tmp_path / "y"))
    assert code == 2
    assert error_line(err) == "lmscope: error: --hook: with several layers, give a template with {layer}, such as " \
                              "blocks.{layer}.hook_resid_mid; got 'blocks.0.hook_resid_mid'"


def test_stopped_train_resumes_by_itself_to_the_same_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during `dict train` says where to resume; the same command then continues from the newest
    checkpoint (made by default) and ends with the bytes of an uninterrupted run; the checkpoints go away."""
    from lmscope.dictionary.train import Trainer

    args = ["dict", "train", "zoo:gpt2-tiny", "--layer", "1", "--d-sae", "64", "--tokens", "2560", "--batch-size",
            "256", "--activation", "topk", "--k", "8"]
    code, _, err = run(capsys, *args, "--out", str(tmp_path / "whole"))
    assert code == 0, err
    assert not (tmp_path / "whole" / "checkpoints").exists()  # default checkpoints are removed at the end
    original = Trainer.train_step

    def interrupt(self: Trainer, step: int, x: Any, y: Any) -> Any:
        if step == 6:
            raise KeyboardInterrupt
        return original(self, step, x, y)

    monkeypatch.setattr(Trainer, "train_step", interrupt)
    code, _, err = run(capsys, *args, "--out", str(tmp_path / "cut"))
    assert code == 130 and error_line(err) == "lmscope: interrupted: rerun the same command to resume from " \
                                              f"{tmp_path / 'cut' / 'checkpoints' / 'step-00000006.pt'}"
    assert not (tmp_path / "cut" / "cfg.json").exists()
    monkeypatch.setattr(Trainer, "train_step", original)
    code, _, err = run(capsys, *args, "--out", str(tmp_path / "cut"))
    assert code == 0, err
    weights = "sae_weights.safetensors"
    assert (tmp_path / "cut" / weights).read_bytes() == (tmp_path / "whole" / weights).read_bytes()
    assert not (tmp_path / "cut" / "checkpoints").exists()
    # a checkpoint of other settings is refused, naming the way out; --overwrite starts over
    monkeypatch.setattr(Trainer, "train_step", interrupt)
    run(capsys, *args, "--out", str(tmp_path / "other"))
    monkeypatch.setattr(Trainer, "train_step", original)
    code, _, err = run(capsys, *args[:-1], "4", "--out", str(tmp_path / "other"))
    checkpoint = tmp_path / "other" / "checkpoints" / "step-00000006.pt"
    assert code == 2 and "Traceback" not in err
    assert error_line(err) == f"lmscope: error: {checkpoint}: a checkpoint of a run with other settings (k: 8 -> 4); " \
                              "rerun with those settings to resume, or pass --overwrite to start over"
    code, _, err = run(capsys, *args[:-1], "4", "--out", str(tmp_path / "other"), "--overwrite")
    assert code == 0, err


@pytest.mark.parametrize(("flag", "value"), [("--batch-size", "0"), ("--tokens", "0"), ("--d-sae", "0"),
                                             ("--reuse", "0"), ("--l1", "nan"), ("--l1", "-1"), ("--k", "0"),
                                             ("--checkpoint-every", "-1"), ("--d-sae", str(10**14)),
                                             ("--seed", "-1"), ("--eval-texts", "-1"), ("--buffer-tokens", "0"),
                                             ("--exclude-first", "-1"), ("--layer", "-1")])
def test_train_refuses_bad_numbers_before_loading(flag: str, value: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for extra in ([], ["--layers", "all"]):
        code, _, err = run(capsys, "dict", "train", "zoo:gpt2-tiny", flag, value, *extra, "--out", str(tmp_path))
        assert code == 2 and err.startswith(f"lmscope: error: {flag}: expected") and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_train_refuses_an_output_it_cannot_write_before_loading(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for out_arg, why in ((a_file, f"{a_file} is a file, expected a directory"),
                         (a_file / "tc", f"{a_file / 'tc'}: {a_file} is a file, so no directory can be made under it")):
        for extra in ([], ["--layers", "all"]):
            code, _, err = run(capsys, "dict", "train", "zoo:gpt2-tiny", *extra, "--out", str(out_arg))
            assert code == 2 and err == f"lmscope: error: --out: {why}\n"
    assert a_file.read_text() == "mine"


def test_a_dictionary_is_refused_with_another_model_of_the_same_shape(trained: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Provenance: the dictionary records the model's weights fingerprint; the same architecture with one
    weight changed is refused with both named, unless --allow-model-mismatch."""
    cfg = json.loads((trained / "cfg.json").read_text())
    assert cfg["provenance"]["model_id"] == "zoo:gpt2-tiny" and cfg["provenance"]["dtype"] == "float32"
    other = HookedModel.from_pretrained("zoo:gpt2-tiny")
    with torch.no_grad():
        next(other.hf.parameters()).view(-1)[0] += 1.0
    other.hf.save_pretrained(tmp_path / "other")
    other.tokenizer.save_pretrained(tmp_path / "other")
    code, _, err = run(capsys, "dict", "eval", str(trained), "--model", str(tmp_path / "other"), "--texts", "4",
                       "--corpus", "synthetic")
    assert code == 2 and "Traceback" not in err
    assert re.fullmatch(re.escape(f"lmscope: error: dictionary {trained} was made with zoo:gpt2-tiny (weights ")
                        + "[0-9a-f]{12}" + re.escape(f"), not with {tmp_path / 'other'} (weights ") + "[0-9a-f]{12}"
                        + re.escape("): the weights differ; pass --allow-model-mismatch to use it anyway"),
                        error_line(err))
    code, _, err = run(capsys, "dict", "eval", str(trained), "--model", str(tmp_path / "other"), "--texts", "4",
                       "--corpus", "synthetic", "--allow-model-mismatch", "--json")
    assert code == 0, err
