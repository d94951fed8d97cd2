"""`lmscope extract` + `lmscope neurons ...` end to end on the zoo model, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import run
from lmscope.data.labels import from_synthetic
from lmscope.data.synthetic import generate_corpus


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    corpus = from_synthetic(generate_corpus(160, seed=9, mix={"grammar": 1.0}), label="pos")
    (root / "sents.txt").write_text("".join(" ".join(s) + "\n" for s in corpus.sentences))
    (root / "pos.txt").write_text("".join(" ".join(ls) + "\n" for ls in corpus.labels))
    (root / "pos.jsonl").write_text("".join(json.dumps({"tokens": s, "labels": ls}) + "\n"
                                            for s, ls in zip(corpus.sentences, corpus.labels, strict=True)))
    return root


def test_extract_rank_evaluate_examples_ablate(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = files / "store"
    code, out, err = run(capsys, "extract", "zoo:gpt2-tiny", "--corpus", str(files / "sents.txt"), "--points",
                         "blocks.0.mlp.hook_post,blocks.1.mlp.hook_post", "--out", str(store), "--json")
    assert code == 0, err
    assert json.loads(out)["n_rows"] == sum(len(line.split()) for line in (files / "sents.txt").open())
    code, out, err = run(capsys, "neurons", "rank", str(store), "--labels", str(files / "pos.txt"), "--method",
                         "probeless", "--out", str(files / "rank"), "--json")
    assert code == 0, err
    ranking = json.loads((files / "rank" / "result.json").read_text())
    assert set(ranking["ranking"][0]) == {"point", "neuron", "score"} and "NOUN" in ranking["per_class"]
    assert len(ranking["ranking"]) == 1024
    code, out, err = run(capsys, "neurons", "rank", str(store), "--labels", str(files / "pos.txt"), "--fast",
                         "--out", str(files / "rank-fast"), "--json")
    assert code == 0, err
    fast = json.loads((files / "rank-fast" / "result.json").read_text())
    assert fast["method"] == "lca" and fast["params"]["warm_start_epochs"] == 1 and fast["params"]["max_iter"] == 5
    assert fast["accuracy"]["test"] > 0.8  # POS from two MLP layers, even unconverged
    code, _, err = run(capsys, "neurons", "rank", str(store), "--labels", str(files / "pos.txt"), "--fast",
                       "--method", "iou", "--out", str(files / "never"))
    assert code == 2 and "--fast: only for --method lca" in err
    code, out, err = run(capsys, "neurons", "evaluate", str(store), "--labels", str(files / "pos.jsonl"),
                         "--ranking", str(files / "rank"), "--ks", "5,20", "--out", str(files / "eval"))
    assert code == 0 and "k=5" in out, err
    assert "accuracy at k: 1/1" in err and "selectivity: 3/3" in err  # progress off a terminal
    result = json.loads((files / "eval" / "result.json").read_text())
    assert result["all_neurons"] > result["majority"] and set(result["selectivity"]) == {"5", "20", "1024"}
    top = ranking["per_class"]["NOUN"][0]
    code, out, _ = run(capsys, "neurons", "top-examples", str(store), "--neuron", f"{top['point']}:{top['neuron']}",
                       "--k", "3", "--json")
    assert code == 0 and len(json.loads(out)["examples"]) == 3
    code, out, _ = run(capsys, "neurons", "top-examples", str(store), "--neuron", "blocks.0.mlp.hook_post:1")
    assert code == 0 and len(out.strip().splitlines()) == 10
    code, out, err = run(capsys, "neurons", "ablate", "zoo:gpt2-tiny", str(store), "--labels", str(files / "pos.txt"),
                         "--ranking", str(files / "rank" / "result.json"), "--k", "20", "--out", str(files / "abl"),
                         "--json")
    assert code == 0, err
    assert json.loads(out)["k"] == 20 and (files / "abl" / "result.json").exists()
    code, out, err = run(capsys, "neurons", "ablate", "zoo:gpt2-tiny", str(store), "--labels", str(files / "pos.txt"),
                         "--ranking", str(files / "rank"), "--k", "20", "--out", str(files / "abl2"))
    assert code == 0 and "ablation runs: 5/5" in err and "top-20 ablated" in out  # clean, top-k, 3 random draws
    other = _same_shape_other_weights(files / "other")  # the store was extracted from zoo:gpt2-tiny
    ablate = ["neurons", "ablate", str(other), str(store), "--labels", str(files / "pos.txt"), "--ranking",
              str(files / "rank"), "--k", "20"]
    code, _, err = run(capsys, *ablate, "--out", str(files / "abl3"))
    assert code == 2 and "zoo:gpt2-tiny" in err and str(other) in err and not (files / "abl3").exists()
    code, _, err = run(capsys, *ablate, "--out", str(files / "abl4"), "--allow-model-mismatch")
    assert code == 0, err
    code, _, err = run(capsys, "neurons", "rank", str(store), "--labels", str(files / "pos.txt"), "--out",
                       str(files / "rank"))
    assert code == 2 and "already exists" in err


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ('{"tokens": ["a", "b"], "labels": ["X"]}\n', ".jsonl", ":1:"),
        ("1\tthe\tthe\tDET\n", ".conllu", ":1: expected 10 tab-separated columns"),
        ('{"tokens": ["a"], "labels": ["X"]}\nnot json\n', ".jsonl", ":2:"),
    ],
)
def test_malformed_labels_exit_2_naming_line(files: Path, capsys: pytest.CaptureFixture[str], content: str,
                                             suffix: str, message: str) -> None:
    bad = files / f"bad{suffix}"
    bad.write_text(content)
    code, _, err = run(capsys, "extract", "zoo:gpt2-tiny", "--corpus", str(bad), "--points", "mlp", "--out",
                       str(files / "never"))
    assert code == 2 and str(bad) + message in err and "Traceback" not in err


def test_misaligned_labels_and_bad_store(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = files / "store2"
    assert run(capsys, "extract", "zoo:gpt2-tiny", "--corpus", str(files / "sents.txt"), "--points",
               "blocks.0.mlp.hook_post", "--out", str(store))[0] == 0
    code, _, err = run(capsys, "extract", "zoo:gpt2-tiny", "--corpus", str(files / "sents.txt"), "--points",
                       "blocks.0.mlp.hook_post", "--out", str(store), "--no-prepend-bos")
    assert code == 2 and "prepend_bos is True, this run's is False" in err  # resuming needs the same tokens
    no_bos = files / "store-no-bos"
    assert run(capsys, "extract", "zoo:gpt2-tiny", "--corpus", str(files / "sents.txt"), "--points",
               "blocks.0.mlp.hook_post", "--out", str(no_bos), "--no-prepend-bos")[0] == 0
    assert json.loads((no_bos / "manifest.json").read_text())["model"]["prepend_bos"] is False
    other = files / "other.jsonl"
    other.write_text('{"tokens": ["a", "b"], "labels": ["X", "Y"]}\n')
    code, _, err = run(capsys, "neurons", "rank", str(store), "--labels", str(other), "--out", str(files / "x"))
    assert code == 2 and "label the corpus that was extracted" in err
    code, _, err = run(capsys, "neurons", "rank", str(files), "--labels", str(other), "--out", str(files / "x"))
    assert code == 2 and "not an activation store" in err
    code, _, err = run(capsys, "neurons", "top-examples", str(store), "--neuron", "blocks.0.mlp.hook_post:9999")
    assert code == 2 and "out of range" in err
    code, _, err = run(capsys, "neurons", "rank", str(store), "--labels", str(files / "pos.txt"), "--method", "svm",
                       "--out", str(files / "y"))
    assert code == 2 and "--method" in err


def _same_shape_other_weights(where: Path) -> Path:
    """zoo:gpt2-tiny with one weight changed, saved as an HF directory: same dimensions, another model."""
    import torch

    from lmscope import HookedModel

    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    with torch.no_grad():
        next(model.hf.parameters()).view(-1)[0] += 1.0
    model.hf.save_pretrained(where)
    model.tokenizer.save_pretrained(where)
    return where


def test_read_label_file_chooses_the_reader(tmp_path: Path) -> None:
    """`--labels FILE --column C`: .conllu by column, a synthetic .jsonl by kind, anything else a NeuroX label file
    parallel to the corpus the store recorded (refused, naming --labels, when it recorded none)."""
    from lmscope.data.labels import read_label_file
    from lmscope.data.synthetic import write_jsonl
    from lmscope.errors import InputError

    (tmp_path / "a.conllu").write_text("1\tthe\t_\tDET\tDT\t_\t0\t_\t_\t_\n2\tcat\t_\tNOUN\tNN\t_\t0\t_\t_\t_\n\n")
    assert read_label_file(tmp_path / "a.conllu").labels == [["DET", "NOUN"]]
    assert read_label_file(tmp_path / "a.conllu", "xpos").labels == [["DT", "NN"]]
    samples = generate_corpus(3, seed=1, mix={"grammar": 1.0})
    write_jsonl(samples, tmp_path / "s.jsonl")
    assert read_label_file(tmp_path / "s.jsonl", "toxic").labels == from_synthetic(samples, "toxic").labels
    (tmp_path / "text.txt").write_text("the cat\n")
    (tmp_path / "labels.txt").write_text("DET NOUN\n")
    parallel = read_label_file(tmp_path / "labels.txt", corpus_path=tmp_path / "text.txt")
    assert parallel.sentences == [["the", "cat"]] and parallel.labels == [["DET", "NOUN"]]
    with pytest.raises(InputError, match=r"^labels: .*labels\.txt: a parallel label file needs the store's corpus"):
        read_label_file(tmp_path / "labels.txt")
