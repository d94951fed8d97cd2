"""`lmscope.demo_real`: the real-model demo on a tiny random Llama saved as a plain HF directory and a user file
(the zoo demo itself is tested in tests/cli/test_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmscope import HookedModel
from lmscope.demo_real import run_real_demo, summary_lines
from lmscope.errors import InputError

DOCS = ["The river rose all night and by morning the bridge was closed to every car and cart in the valley.",
        "She read the letter twice, folded it, and put it back in the drawer without a word.",
        "Prices rose again in March, and the council met to discuss the budget for the new library."] * 3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init Llama (SmolLM2's layout: grouped-query attention, gated MLP) with the synthetic tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmscope.data.synthetic import generate_corpus
    from lmscope.data.tokenizer import save_tokenizer, train_tokenizer

    tok = train_tokenizer(generate_corpus(300, seed=0))
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=48, vocab_size=len(tok),
                                      max_position_embeddings=128, bos_token_id=0, eos_token_id=0,
                                      pad_token_id=0)).eval()
    root = tmp_path_factory.mktemp("real") / "m"
    hf.save_pretrained(root)
    save_tokenizer(tok, root)
    return root


def test_real_demo_on_a_model_directory_and_a_user_file(model_dir: Path, tmp_path: Path) -> None:
    from lmscope.data.corpus import load_corpus
    from lmscope.heads.detectors import detect_heads
    from lmscope.model.stats import lm_loss

    (tmp_path / "docs.txt").write_text("\n".join(DOCS) + "\n")
    stages: list[str] = []
    summary = run_real_demo(str(model_dir), str(tmp_path / "docs.txt"), tmp_path / "out", max_texts=6,
                            context_tokens=16, stage=lambda s, i, n: stages.append(s))
    m = HookedModel.from_pretrained(str(model_dir))
    texts = load_corpus(str(tmp_path / "docs.txt"), model_name=str(model_dir), tokenizer=m.tokenizer,
                        max_tokens=16).texts[:6]
    assert summary["n_texts"] == 6 and summary["parity_ok"] is True
    assert summary["n_hook_points"] == len(m.hook_names)
    assert summary["loss"] == pytest.approx(lm_loss(m, texts))
    assert summary["n_tokens"] == sum(len(m.tokenizer(t)["input_ids"]) - 1 for t in texts)  # no BOS here
    reference = detect_heads(m, seq_len=20, n_seqs=4)
    for kind in ("previous_token", "duplicate_token", "induction"):
        best = reference.top_heads(kind, 1)[0]
        assert summary["top_heads"][kind] == {**best, "score": pytest.approx(best["score"])}
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert list(saved["sections"]) == ["model_card", "hook_parity", "corpus_loss", "head_detectors",
                                       "neuron_stats", "autointerp"]
    positions = saved["sections"]["autointerp"]["data"]["config"]["positions"]
    assert positions["rows"] == "tokens" and positions["prepend_bos"] is False
    assert positions["n_rows"] == sum(len(m.tokenizer(t)["input_ids"]) for t in texts)
    assert saved["meta"]["corpus"]["source"] == str(tmp_path / "docs.txt")
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Loss on your text" in html and "Induction score" in html
    for stage in ("hook parity", "loss on the corpus", "head detectors", "neuron statistics", "autointerp",
                  "building report", f"loading {model_dir}"):
        assert stage in stages
    lines = summary_lines(summary)
    assert lines[0].startswith("report  ") and any(line.startswith("hook parity ok") for line in lines)
    assert any(line.startswith("best induction head") for line in lines)
    with pytest.raises(InputError, match="already exists"):
        run_real_demo(str(model_dir), str(tmp_path / "docs.txt"), tmp_path / "out")


def test_a_model_that_is_not_a_zoo_model_needs_a_corpus(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^corpus: .* is not a zoo model"):
        run_real_demo(str(model_dir), None, tmp_path)
    with pytest.raises(InputError, match="no such file"):
        run_real_demo(str(model_dir), str(tmp_path / "missing.txt"), tmp_path)
    with pytest.raises(InputError, match=r"^max_texts: expected an integer >= 1, got 0$"):
        run_real_demo(str(model_dir), "synthetic", tmp_path, max_texts=0)
    assert not any(tmp_path.iterdir())  # nothing written


def test_demo_cli_with_model_and_corpus(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli_runner import run

    (tmp_path / "docs.txt").write_text("\n".join(DOCS) + "\n")
    code, out, err = run(capsys, "demo", "--model", str(model_dir), "--corpus", str(tmp_path / "docs.txt"),
                         "--max-texts", "4", "--out", str(tmp_path / "d"), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["n_texts"] == 4 and summary["parity_ok"] is True and set(summary["top_heads"]) == {
        "previous_token", "duplicate_token", "induction"}
    assert (tmp_path / "d" / "report.html").exists()
    code, out, err = run(capsys, "demo", "--model", str(model_dir), "--corpus", str(tmp_path / "docs.txt"),
                         "--max-texts", "4", "--out", str(tmp_path / "d"), "--overwrite")
    assert code == 0, err
    assert "hook parity ok" in out and "loss on the corpus" in out and "best induction head" in out
    assert "loading" in err  # progress lines on stderr (not a terminal)
    code, _, err = run(capsys, "demo", "--model", str(model_dir), "--out", str(tmp_path / "e"))
    assert code == 2 and "--corpus" in err and "not a zoo model" in err
    code, _, err = run(capsys, "demo", "--corpus", str(tmp_path / "docs.txt"), "--out", str(tmp_path / "e"))
    assert code == 2 and "--corpus: applies with --model" in err
