"""`lmscope dict train | eval | features` on the zoo model, and the demo's transcoder section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import run
from lmscope import HookedModel
from lmscope.dictionary import load_dictionary
from lmscope.dictionary.features import de_embedding
from lmscope.dictionary.recipes import dictionary_hooks
from lmscope.errors import InputError


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dict") / "tc"
    import contextlib
    import io

    from lmscope.cli import main

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
    assert 0 < result["metrics"]["fvu"] < 0.5 and result["metrics"]["l0"] > 0
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
    assert code == 2 and "out of range" in err


def test_train_refusals(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "dict", "train", "zoo:gpt2-tiny", "--out", str(trained), "--tokens", "1000")
    assert code == 2 and "already exists" in err
    code, _, err = run(capsys, "dict", "train", "zoo:gpt2-tiny", "--layer", "9", "--out", str(trained / "x"))
    assert code == 2 and "--layer" in err
    code, _, err = run(capsys, "dict", "train", "zoo:gpt2-tiny", "--activation", "topk", "--out", str(trained / "y"))
    assert code == 2 and "--k" in err


def test_hooks_and_de_embedding_by_hand(trained: Path) -> None:
    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    assert dictionary_hooks(model, "sae", 2) == ("blocks.2.hook_resid_post", "blocks.2.hook_resid_post")
    with pytest.raises(InputError, match="--kind"):
        dictionary_hooks(model, "crosscoder", 0)
    d = load_dictionary(trained)
    top = de_embedding(model, d, 3, k=4)
    scores = model.W_E @ d.W_enc[:, 3].detach()
    assert [s for _, s in top] == pytest.approx(scores.topk(4).values.tolist())
