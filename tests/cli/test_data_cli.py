"""`lmscope data synthetic`: the files it writes, --json, and refusing to overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import run
from lmscope.data.labels import read_labels
from lmscope.data.synthetic import generate_corpus, read_jsonl


def test_data_synthetic_writes_the_corpus_and_refuses_to_overwrite(capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path) -> None:
    args = ["data", "synthetic", "--out", str(tmp_path), "--samples", "40", "--seed", "7", "--split", "train"]
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["samples"] == 40 and set(shown["files"]) == {"corpus.txt", "labels.conllu", "samples.jsonl"}
    samples = generate_corpus(40, seed=7, split="train")
    assert (tmp_path / "corpus.txt").read_text().splitlines() == [s.text for s in samples]
    assert read_jsonl(tmp_path / "samples.jsonl") == samples
    assert read_labels(tmp_path / "labels.conllu").labels == [list(s.pos) for s in samples]
    code, _, err = run(capsys, *args)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    code, out, err = run(capsys, *args, "--samples", "3", "--overwrite")
    assert code == 0, err
    assert "3 synthetic samples" in out and len((tmp_path / "corpus.txt").read_text().splitlines()) == 3
    code, _, err = run(capsys, "data", "synthetic", "--out", str(tmp_path / "n"), "--split", "dev")
    assert code == 2 and "--split" in err


def test_exported_corpus_and_labels_feed_extract_and_neurons_rank(capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path) -> None:
    from lmscope.data.tokenizer import save_tokenizer
    from tiny_models import tiny_hooked_with_tokenizer

    m = tiny_hooked_with_tokenizer()
    m.hf.save_pretrained(tmp_path / "m")
    save_tokenizer(m.tokenizer, tmp_path / "m")
    assert run(capsys, "data", "synthetic", "--out", str(tmp_path / "d"), "--samples", "80")[0] == 0
    code, _, err = run(capsys, "extract", str(tmp_path / "m"), "--corpus", str(tmp_path / "d" / "corpus.txt"),
                       "--points", "blocks.0.mlp.hook_post", "--out", str(tmp_path / "store"))
    assert code == 0, err
    for labels in ("labels.conllu", "samples.jsonl"):
        code, _, err = run(capsys, "neurons", "rank", str(tmp_path / "store"), "--labels",
                             str(tmp_path / "d" / labels), "--method", "probeless", "--out",
                             str(tmp_path / labels), "--json")
        assert code == 0, err
        assert "NOUN" in json.loads((tmp_path / labels / "result.json").read_text())["labels"]
