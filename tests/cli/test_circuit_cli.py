"""`lmscope circuit` on a tiny saved model with random transcoders: files, summary, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cli_runner import run
from lmscope.dictionary import DictConfig, Dictionary
from lmscope.dictionary.stack import save_transcoders
from tiny_models import save_with_random_transcoders, tiny_hooked_with_tokenizer

PROMPT = "from the year 1732 to the year 17"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("circuit")
    model = tiny_hooked_with_tokenizer()
    return save_with_random_transcoders(model, root, d_sae=32)


def test_circuit_writes_result_graph_and_report(setup: tuple[Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    model, tcs = setup
    args = ["circuit", str(model), "--transcoders", str(tcs), "--prompt", PROMPT, "--target", "logit:40-20",
            "--iters", "2", "--branches", "4", "--beam", "8", "--threshold", "0", "--out", str(tmp_path)]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert "recovered" in out and "frozen" in out and "target ←" in out and "graph.json" in out
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["options"] == {"n_iters": 2, "branches": 4, "beam": 8, "threshold": 0.0,
                                 "pos": len(result["tokens"]) - 1, "layers": [0, 1], "layers_without_transcoder": []}
    assert "no transcoder" not in out
    assert max(len(p["nodes"]) for p in result["paths"]) == 3  # two iterations: target plus two steps
    target_node = next(n for n in result["graph"]["nodes"] if n["kind"] == "target")
    assert target_node["value"] == pytest.approx(result["target_value"])
    features = [n for n in result["graph"]["nodes"] if n["kind"] == "feature"]
    dirs = {n["layer"]: tcs / ("layer" + str(n["layer"])) for n in features}
    assert features and all(n["unit"] == f"dict:{dirs[n['layer']]}:{n['index']}@{n['pos']}"
                            for n in features)  # units naming each layer's transcoder directory
    from lmscope import HookedModel
    from lmscope.circuits.graph import CircuitGraph
    from lmscope.dictionary import attach_dictionaries
    from lmscope.model.interventions import ZeroAblation

    graph = CircuitGraph.from_dict(json.loads((tmp_path / "graph.json").read_text()))
    hooked = HookedModel.from_pretrained(str(model))
    units = graph.units(["feature"])
    attach_dictionaries(hooked, units)
    first = next(iter(units))
    hook = f"{first.dictionary}.hook_sae_acts_post"
    _, clean = hooked.run_with_cache(PROMPT, names=[hook])
    node = next(n for n in features if n["unit"] == str(first))
    assert float(clean[hook][0, first.position, first.index]) == pytest.approx(node["activation"], rel=1e-5)
    _, ablated = hooked.run_with_cache(PROMPT, names=[hook], hooks=ZeroAblation(units).hooks())
    assert float(ablated[hook][0, first.position, first.index]) == 0.0  # the graph's units act on the model
    html = (tmp_path / "report.html").read_text()
    assert "Attribution graph" in html and "Top paths" in html and "largest features" in html
    code, _, err = run(capsys, *args)
    assert code == 2 and "already exists" in err
    code, out, err = run(capsys, *args[:-2], "--target", "feature:1:3", "--position", "4", "--no-check", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["recovery"] is None and data["options"]["pos"] == 4 and data["target"]["feature"] == 3


@pytest.mark.parametrize(("extra", "message"), [
    (["--target", "logit:the year"], "single known token"),
    (["--target", "feature:1:99"], "outside 0..31"),
    (["--target", "logit:40", "--position", "99"], "--position"),
    (["--target", "logit:40", "--iters", "0"], "--iters"),
    (["--target", "logit:40", "--threshold", "-1"], "--threshold"),
])
def test_circuit_refusals(setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str], extra: list[str],
                          message: str) -> None:
    model, tcs = setup
    code, _, err = run(capsys, "circuit", str(model), "--transcoders", str(tcs), "--prompt", PROMPT, *extra)
    assert code == 2 and message in err, err


def test_circuit_refuses_a_missing_transcoder_directory(setup: tuple[Path, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = setup
    code, _, err = run(capsys, "circuit", str(model), "--transcoders", str(tmp_path / "none"), "--prompt", PROMPT,
                       "--target", "logit:40")
    assert code == 2 and "--transcoders" in err and "not a directory" in err


def _digit_model(root: Path) -> Path:
    """A random 3-layer GPT-2 whose tokenizer cuts numbers into single digits, saved as an HF directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["[UNK]", "from", "the", "year", "to", *map(str, range(10))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=3, n_embd=16, n_head=2, vocab_size=len(words), n_positions=32, bos_token_id=0,
                     eos_token_id=0, pad_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(root / "digits")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[UNK]").save_pretrained(root / "digits")
    return root / "digits"


def test_circuit_names_the_year_and_the_layers_without_a_transcoder(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    model = _digit_model(tmp_path)
    cfg = DictConfig(kind="transcoder", d_in=16, d_sae=8, hook_name="blocks.1.ln2.hook_normalized",
                     hook_name_out="blocks.1.hook_mlp_out")
    save_transcoders({1: Dictionary(cfg, generator=torch.Generator().manual_seed(0))}, tmp_path / "tcs")
    code, out, err = run(capsys, "circuit", str(model), "--transcoders", str(tmp_path / "tcs"), "--prompt", PROMPT,
                         "--target", "greater-than:1732", "--iters", "2", "--out", str(tmp_path / "out"))
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("target greater-than:1732: years split into digits: mean logit(next digit 4..9) - "
                            "mean logit(next digit 0..2)"), out
    assert "no transcoder for layers 0, 2 of 3: each is one opaque 'mlp' leaf, with no features" in out
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["options"]["layers_without_transcoder"] == [0, 2]
    assert result["target"]["label"].startswith("greater-than:1732:")
    assert "layers without a transcoder" in (tmp_path / "out" / "report.html").read_text()
    lines = err.splitlines()  # stderr is not a terminal: plain progress lines per stage
    for stage in ("trace: 0/1", "trace: 1/1", "path search: 2/2", "check: 1/1"):
        assert any(line.startswith(stage + " (") for line in lines), err
    code, _, err = run(capsys, "circuit", str(model), "--transcoders", str(tmp_path / "tcs"), "--prompt", PROMPT,
                       "--target", "greater-than:95")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "split" in err and "trace" not in err


def test_circuit_refuses_transcoders_made_with_another_model(setup: tuple[Path, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Transcoders record the model's fingerprint; the same architecture with other weights is refused with
    both named (before the trace), and --allow-model-mismatch runs it anyway."""
    from lmscope import HookedModel
    from lmscope.dictionary import load_dictionary, save_dictionary

    model_dir, tcs = setup
    model = HookedModel.from_pretrained(str(model_dir))
    stamped = tmp_path / "stamped"
    for layer in range(model.cfg.n_layers):
        save_dictionary(load_dictionary(tcs / f"layer{layer}"), stamped / f"layer{layer}", model=model)
    args = ["--prompt", PROMPT, "--target", "logit:40", "--iters", "1", "--no-check"]
    code, _, err = run(capsys, "circuit", str(model_dir), "--transcoders", str(stamped), *args)
    assert code == 0, err
    with torch.no_grad():
        next(model.hf.parameters()).view(-1)[0] += 1.0
    model.hf.save_pretrained(tmp_path / "other")
    model.tokenizer.save_pretrained(tmp_path / "other")
    code, _, err = run(capsys, "circuit", str(tmp_path / "other"), "--transcoders", str(stamped), *args)
    assert code == 2 and "--transcoders" in err and str(model_dir) in err and "Traceback" not in err
    code, _, err = run(capsys, "circuit", str(tmp_path / "other"), "--transcoders", str(stamped), *args,
                       "--allow-model-mismatch")
    assert code == 0, err
