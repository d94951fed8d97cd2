"""The CLI sweep: every command, fed bad numbers, bad files and bad names, refuses in one line.

For each row of SWEEP: exit code 2, exactly one line on stderr that names the bad argument or file, no
traceback, nothing on stdout, nothing written to --out, and (unless the row says the check needs the
model, as unknown hook names do) no model loaded: a bad input costs nothing. The rows are keyed by
command, and the app is walked, so a new command without rows fails `test_every_command_has_rows`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main

from cli_runner import run
from lmscope.cli import app, command_flags, flag_message
from lmscope.errors import InputError, bad_argument
from lmscope.model.hooked import HookedModel

M = "zoo:gpt2-tiny"
HUGE = str(2**40)
SENTENCES = [["the", "senator", "voted"], ["the", "chef", "cooked", "soup"]]
CONLLU = "".join(
    "".join(f"{i}\t{w}\t_\t{'DET' if w == 'the' else 'NOUN'}\t_\t_\t0\t_\t_\t_\n" for i, w in enumerate(s, 1)) + "\n"
    for s in SENTENCES)


@dataclass(frozen=True)
class Row:
    """Arguments after the command (`{name}`: a file of the `files` fixture), the words the error must say,
    whether the check needs the model (a hook name exists only in the model), whether to add `--out`."""

    args: tuple[str, ...]
    says: str
    model: bool = False
    out: bool = True


def r(*args: str, says: str, model: bool = False, out: bool = True) -> Row:
    return Row(args, says, model, out)


def numbers(base: tuple[str, ...], flag: str, *bad: str) -> list[Row]:
    """One row per bad value of a numeric flag; the message must name the flag."""
    return [Row((*base, flag, v), flag) for v in bad]


COUNT_BAD = ("0", "-1", HUGE, "nan", "inf", "1.5")
SEED_BAD = ("-1", str(2**32), "nan")
FLOAT_BAD = ("nan", "inf", "-inf", "1e400")

EXTRACT = (M, "--corpus", "{text}", "--points", "mlp")
PATCH = (M, "--base", "{text}", "--source", "{text}", "--target", " a", "--foil", " b")
MEDIATE = (M, "{rows}", "--treatment", "t", "--confounder", "c")
CIRCUIT = (M, "--transcoders", "{adir}", "--prompt", "p", "--target", "logit:1")
RANK = ("{store}", "--labels", "{labels}")
EVALUATE = ("{store}", "--labels", "{labels}", "--ranking", "{badjson}")
ABLATE = (M, "{store}", "--labels", "{labels}", "--ranking", "{badjson}")
AUTOINTERP = ("{store}",)
AI_MODEL = ("--model", M, "--corpus", "{text}", "--points", "blocks.0.mlp.hook_post")
DICT_TRAIN = (M, "--layer", "1")

SWEEP: dict[str, list[Row]] = {
    "extract": [
        *numbers(EXTRACT, "--batch-tokens", *COUNT_BAD), *numbers(EXTRACT, "--shard-sentences", "0", HUGE),
        r(M, "--corpus", "{missing}", "--points", "mlp", says="missing.txt: no such file"),
        r(M, "--corpus", "{adir}", "--points", "mlp", says="adir"),
        r(M, "--corpus", "{empty}", "--points", "mlp", says="empty.txt"),
        r(M, "--corpus", "{junk}", "--points", "mlp", says="junk.txt"),
        r(M, "--corpus", "{badjsonl}", "--points", "mlp", says="bad.jsonl:1"),
        r(M, "--corpus", "{wrongjsonl}", "--points", "mlp", says="wrong.jsonl:1"),
        r(*EXTRACT, "--aggregate", "max", says="--aggregate"), r(*EXTRACT, "--dtype", "int8", says="--dtype"),
        r(M, "--corpus", "{text}", "--points", ",", says="--points"),
        r(M, "--corpus", "{text}", "--points", "blocks.9.mlp.hook_post", says="blocks.9.mlp.hook_post", model=True),
        r(*EXTRACT, "--out", "{afile}", says="is a file", out=False),
        r(*EXTRACT, "--out", "{under_file}", says="afile", out=False),
    ],
    "demo": [
        *numbers((), "--max-texts", "0", "-3", HUGE),
        r("--corpus", "{text}", says="--corpus"), r("--model", M, "--corpus", "{missing}", says="missing.txt"),
        r("--model", M, "--corpus", "{empty}", says="empty.txt"),
        r("--out", "{afile}", says="is a file", out=False),
        r("--out", "{under_file}", says="afile", out=False),
        r("--model", "{missing}", "--corpus", "{text}", says="missing.txt': no such directory", model=True),
    ],
    "info": [
        r("{missing}", says="missing.txt", model=True), r("zoo:nope", says="'nope': unknown", model=True),
        r("{adir}", says="adir", model=True), r("{afile}", says="afile", model=True),
        r("", says="model", model=True),
        r("{junk_gguf}", says="junk.gguf': not a complete GGUF file", model=True),
    ],
    "patch": [
        *numbers(PATCH, "--verify-top", *COUNT_BAD), *numbers(PATCH, "--continuation-tokens", "0", "nan"),
        r(M, "--base", "{missing}", "--source", "{text}", "--target", " a", "--foil", " b", says="missing.txt"),
        r(M, "--base", "{empty}", "--source", "{text}", "--target", " a", "--foil", " b", says="empty.txt"),
        r(M, "--base", "{junk}", "--source", "{text}", "--target", " a", "--foil", " b", says="junk.txt"),
        r(M, "--base", "{adir}", "--source", "{text}", "--target", " a", "--foil", " b", says="adir"),
        r(M, "--base", "{text}", "--source", "{badjsonl}", "--target", " a", "--foil", " b", says="bad.jsonl:1"),
        r(M, "--base", "{text}", "--source", "{wrongjsonl}", "--target", " a", "--foil", " b", says="wrong.jsonl:1"),
        r(*PATCH, "--metric", "nope", says="--metric"), r(*PATCH, "--method", "fast", says="--method"),
        r(M, "--base", "{text}", "--source", "{text}", says="--target"),
        r(*PATCH, "--metric", "py:no_such_module_xyz:f", says="--metric"),
        r(*PATCH, "--metric", "py:os:sep", says="not callable"),
        r(M, "--base", "{text}", "--source", "{rows}", "--target", " a", "--foil", " b", says="--source"),
        r(*PATCH, "--metric", "classifier:{missing}", says="missing.txt"),
        r(*PATCH, "--metric", "toxicity", "--lexicon", "{missing}", says="missing.txt"),
        r(*PATCH, "--position", "some", says="--position"),
        r(*PATCH, "--components", "heads,bogus", says="--components"),
        r(*PATCH, "--components", "neurons", "--neurons", "blocks.1.mlp.hook_post:x", says="blocks.1.mlp.hook_post:x"),
        r(*PATCH, "--components", "neurons", "--neurons", "blocks.9.mlp.hook_post:1", says="blocks.9", model=True),
        r(*PATCH, "--out", "{afile}", says="is a file", out=False),
    ],
    "mediate": [
        *numbers(MEDIATE, "--n-boot", *COUNT_BAD), *numbers(MEDIATE, "--max-pairs", "0", HUGE),
        *numbers(MEDIATE, "--top-k", "0"), *numbers(MEDIATE, "--chunk-mb", "0", "-5"),
        *numbers(MEDIATE, "--n-topics", "0"), *numbers(MEDIATE, "--seed", *SEED_BAD),
        *numbers(MEDIATE, "--continuation-tokens", "0"),
        r(M, "{missing}", "--treatment", "t", "--confounder", "c", says="missing.txt"),
        r(M, "{empty}", "--treatment", "t", "--confounder", "c", says="empty.txt"),
        r(M, "{junk}", "--treatment", "t", "--confounder", "c", says="junk.txt"),
        r(M, "{adir}", "--treatment", "t", "--confounder", "c", says="adir"),
        r(M, "{badjsonl}", "--treatment", "t", "--confounder", "c", says="bad.jsonl:1"),
        r(M, "{wrongjsonl}", "--treatment", "t", "--confounder", "c", says="wrong.jsonl:1"),
        r(M, "{rows}", "--treatment", "nofield", "--confounder", "c", says="missing field 'nofield'"),
        r(M, "{rows}", "--treatment", "t", says="--confounder/--infer-topics"),
        r(M, "{rows}", "--treatment", "t", "--infer-topics", "lda", says="--infer-topics"),
        r(*MEDIATE, "--components", "neurons", "--neurons", "blocks.1.mlp.hook_post:-3", says="hook_post:-3"),
        r(*MEDIATE, "--outcome", "nope", says="--outcome"), r(*MEDIATE, "--outcome", "prob", says="--target"),
        r(*MEDIATE, "--lexicon", "{junk}", says="junk.txt"), r(*MEDIATE, "--lexicon", "{empty}", says="empty.txt"),
        r(*MEDIATE, "--components", "", says="--components"),
        r(*MEDIATE, "--out", "{under_file}", says="afile", out=False),
    ],
    "circuit": [
        *numbers(CIRCUIT, "--iters", *COUNT_BAD), *numbers(CIRCUIT, "--branches", "0", "-2"),
        *numbers(CIRCUIT, "--beam", "0"), *numbers(CIRCUIT, "--threshold", *FLOAT_BAD, "-1"),
        *numbers(CIRCUIT, "--heldout-n", "0"), *numbers(CIRCUIT, "--position", HUGE, "-" + HUGE),
        r(M, "--transcoders", "{missing}", "--prompt", "p", "--target", "logit:1", says="missing.txt"),
        r(M, "--transcoders", "{afile}", "--prompt", "p", "--target", "logit:1", says="afile"),
        r(*CIRCUIT, says="adir"),
        r(M, "--transcoders", "{broken_stack}", "--prompt", "p", "--target", "logit:1", says="cfg.json"),
        r(*CIRCUIT, "--heldout", "weeks", says="--heldout"),
        r(*CIRCUIT, "--out", "{afile}", says="is a file", out=False),
    ],
    "zoo list": [r("extra", says="extra", out=False)],
    "zoo train": [r("nope", says="nope"), r("gpt2-tiny", "--out", "{under_file}", says="afile", out=False),
                  r("gpt2-tiny", "--out", "{afile}", says="is a file", out=False)],
    "zoo path": [r("nope", says="nope", out=False)],
    "neurons rank": [
        *numbers(RANK, "--min-count", "0", "-1", "nan"), *numbers(RANK, "--seed", *SEED_BAD),
        r("{missing}", "--labels", "{labels}", says="missing.txt"), r("{afile}", "--labels", "{labels}", says="afile"),
        r("{adir}", "--labels", "{labels}", says="adir"),
        r("{broken_store}", "--labels", "{labels}", says="manifest.json"),
        r("{schema_store}", "--labels", "{labels}", says="manifest.json"),
        r("{store}", "--labels", "{missing}", says="missing.txt"),
        r("{store}", "--labels", "{junk_conllu}", says="junk.conllu"),
        r("{store}", "--labels", "{empty_conllu}", says="empty.conllu"),
        r(*RANK, "--method", "magic", says="--method"), r(*RANK, "--column", "nope", says="nope"),
        r(*RANK, "--method", "iou", "--fast", says="--fast"),
        r(*RANK, "--out", "{afile}", says="is a file", out=False),
    ],
    "neurons evaluate": [
        *numbers(EVALUATE, "--min-count", "0"), *numbers(EVALUATE, "--seed", "-1"),
        r(*EVALUATE, "--ks", "0,10", says="--ks"), r(*EVALUATE, "--ks", "x", says="--ks"),
        r(*EVALUATE, "--ks", "", says="--ks"), r(*EVALUATE, says="bad.json"),
        r("{store}", "--labels", "{labels}", "--ranking", "{adir}", says="adir"),
        r("{store}", "--labels", "{labels}", "--ranking", "{missing}", says="missing.txt"),
        r("{broken_store}", "--labels", "{labels}", "--ranking", "{badjson}", says="manifest.json"),
        r(*EVALUATE, "--out", "{under_file}", says="afile", out=False),
    ],
    "neurons top-examples": [
        *numbers(("{store}", "--neuron", "blocks.0.mlp.hook_post:1"), "--k", *COUNT_BAD),
        r("{store}", "--neuron", "blocks.9.mlp.hook_post:1", says="blocks.9.mlp.hook_post", out=False),
        r("{store}", "--neuron", "garbage", says="garbage", out=False),
        r("{store}", "--neuron", "blocks.0.mlp.hook_post:-1", says="blocks.0.mlp.hook_post:-1", out=False),
        r("{store}", "--neuron", "blocks.0.mlp.hook_post:99999", says="out of range", out=False),
        r("{broken_store}", "--neuron", "blocks.0.mlp.hook_post:1", says="manifest.json", out=False),
    ],
    "neurons ablate": [
        *numbers(ABLATE, "--k", *COUNT_BAD), *numbers(ABLATE, "--seed", "-1"),
        r(*ABLATE, "--mode", "half", says="--mode"), r(*ABLATE, says="bad.json"),
        r(M, "{broken_store}", "--labels", "{labels}", "--ranking", "{badjson}", says="manifest.json"),
        r(*ABLATE, "--out", "{afile}", says="is a file", out=False),
    ],
    "dict train": [
        *numbers(DICT_TRAIN, "--d-sae", "0", "-4"), *numbers(DICT_TRAIN, "--tokens", "0"),
        *numbers(DICT_TRAIN, "--batch-size", "0"), *numbers(DICT_TRAIN, "--reuse", "0"),
        *numbers(DICT_TRAIN, "--l1", *FLOAT_BAD, "-1"),
        *numbers(DICT_TRAIN, "--seed", *SEED_BAD), *numbers(DICT_TRAIN, "--exclude-first", "-1"),
        *numbers(DICT_TRAIN, "--d-sae", HUGE, "nan"), *numbers(DICT_TRAIN, "--eval-texts", "-1"),
        r(*DICT_TRAIN, "--activation", "topk", "--k", "0", says="--k"),
        r(M, "--layer", "1", "--corpus", "{missing}", says="missing.txt"),
        r(M, "--layers", "x", says="--layers: expected 'all' or comma-separated layers"),
        r(M, "--layers", "0-99", says="--layers: expected layers in 0..3, got '0-99'"),
        r(*DICT_TRAIN, "--out", "{afile}", says="is a file", out=False),
    ],
    "dict eval": [
        r("{missing}", says="missing.txt"), r("{adir}", says="adir"), r("{broken_dict}", says="cfg.json"),
        r("{afile}", says="afile"), r("{broken_dict}", "--out", "{afile}", says="is a file", out=False),
        r("{broken_dict}", "--texts", "-2", says="--texts"),
    ],
    "dict features": [
        r("{missing}", says="missing.txt", out=False), r("{broken_dict}", says="cfg.json", out=False),
        r("{broken_dict}", "--top-examples", "0", says="--top-examples", out=False),
        r("{broken_dict}", "--texts", "0", says="--texts", out=False),
    ],
    "heads succession": [
        *numbers((M,), "--threshold", *FLOAT_BAD, "-0.5", "2"), *numbers((M,), "--min-pairs", *COUNT_BAD),
        r(M, "--mode", "bogus", says="--mode"), r(M, "--out", "{afile}", says="is a file", out=False),
        r("{missing}", says="missing.txt", model=True),
    ],
    "heads mod10": [
        *numbers((M,), "--seeds", "0", HUGE), *numbers((M,), "--d-sae", "0", "-1"),
        *numbers((M,), "--l1", *FLOAT_BAD, "-1"),
        r(M, "--head", "x.y", says="--head"), r(M, "--head", "9.9", says="--head", model=True),
    ],
    "heads edit": [
        *numbers((M, "--from", "1", "--to", "2"), "--seeds", "0"),
        r(M, "--from", "10", "--to", "2", says="--from"), r(M, "--from", "1", "--to", "-1", says="--to"),
        r(M, "--from", "3", says="--to: expected a residue 0-9, got None; give both"),
        r(M, "--from", "3", "--to", "3", says="--to: got 3, the residue the edit starts from"),
        r(M, "--head", "1", says="--head"),
    ],
    "heads detect": [*numbers((M,), "--seq-len", "1", "0", "nan", HUGE), r(M, "--out", "{under_file}", says="afile",
                                                                          out=False)],
    "heads wild": [
        *numbers((M,), "--samples", *COUNT_BAD), *numbers((M,), "--max-tokens", "1"),
        *numbers((M,), "--batch-size", "0"), *numbers((M,), "--chunk-mb", "0"),
        r(M, "--quiet", "--batch-size", "0", says="--batch-size"),
        r(M, "--corpus", "{missing}", says="missing.txt"), r(M, "--corpus", "{empty}", says="empty.txt"),
        r(M, "--corpus", "{junk}", says="junk.txt"), r(M, "--corpus", "{adir}", says="adir"),
        r(M, "--corpus", "{badjsonl}", says="bad.jsonl"),
    ],
    "whitebox train": [
        *numbers((), "--layers", *COUNT_BAD), *numbers((), "--d-model", "0"), *numbers((), "--heads", "0"),
        *numbers((), "--expansion", "0"), *numbers((), "--steps", "0"), *numbers((), "--batch-size", "0"),
        *numbers((), "--seq-len", "1"), *numbers((), "--lr", *FLOAT_BAD, "0", "-1"),
        *numbers((), "--vocab-size", "10"), *numbers((), "--samples", "0"), *numbers((), "--seed", *SEED_BAD),
        r("--mode", "half", says="--mode"), r("--d-model", "10", "--heads", "3", says="--d-model, --heads"),
        r("--corpus", "{missing}", says="missing.txt"), r("--corpus", "{empty}", says="empty.txt"),
        r("--corpus", "{junk}", says="junk.txt"), r("--out", "{afile}", says="is a file", out=False),
    ],
    "whitebox compare": [
        *numbers((), "--sentences", "9", "0"), *numbers((), "--heldout-samples", "0"),
        *numbers((), "--units-per-layer", "0"), *numbers((), "--seed", *SEED_BAD),
        r("--models", M, says="--models"), r("--corpus", "{missing}", says="missing.txt"),
        r("--out", "{afile}", says="is a file", out=False),
    ],
    "autointerp score": [
        *numbers(AUTOINTERP, "--units-per-point", *COUNT_BAD), *numbers(AUTOINTERP, "--seed", *SEED_BAD),
        *numbers(AUTOINTERP, "--llm-batch-size", "0"),
        *numbers(AI_MODEL, "--context-tokens", "1", "nan"), *numbers(AI_MODEL, "--max-texts", "0"),
        *numbers(AI_MODEL, "--exclude-first", "-1"),
        r("{store}", says="--out", out=False), r("{broken_store}", says="manifest.json"),
        r("{missing}", says="missing.txt"), r(*AUTOINTERP, "--explainer", "gpt", says="--explainer"),
        r(*AUTOINTERP, "--points", "blocks.9.mlp.hook_post", says="blocks.9.mlp.hook_post"),
        r(*AUTOINTERP, "--points", "garbage", says="garbage"),
        r(*AUTOINTERP, "--dict", "{broken_dict}", says="cfg.json"),
        r(*AUTOINTERP, "--labels", "{junk_conllu}", says="junk.conllu"),
        r(*AUTOINTERP, "--labels", "{empty_conllu}", says="empty.conllu"),
        r(*AI_MODEL[:-1], "blocks.9.mlp.hook_post", says="blocks.9.mlp.hook_post", model=True),
        r("--model", M, "--corpus", "{missing}", "--points", "blocks.0.mlp.hook_post", says="missing.txt"),
        r("--model", M, "--corpus", "{empty}", "--points", "blocks.0.mlp.hook_post", says="empty.txt"),
        r("--model", M, "--corpus", "{text}", says="--points"),
        r(*AUTOINTERP, "--model", M, says="not both"),
        r(*AUTOINTERP, "--out", "{afile}", says="is a file", out=False),
    ],
    "report": [
        r("{missing}", says="missing.txt"), r("{adir}", says="adir"), r("{afile}", says="afile"),
        r("{broken_result}", says="result.json"), r("{schema_result}", says="result.json"),
        r("{adir}", "--out", "{afile}", says="is a file", out=False),
        r("{adir}", "--out", "{under_file}", says="afile", out=False),
    ],
    "data synthetic": [
        *numbers((), "--samples", *COUNT_BAD), *numbers((), "--seed", *SEED_BAD),
        r("--split", "test", says="--split"), r("--out", "{afile}", says="is a file", out=False),
        r("--out", "{under_file}", says="afile", out=False),
    ],
}


def command_paths() -> list[str]:
    """Every leaf command of the app, as `"group command"` strings."""
    found: list[str] = []

    def walk(command: Any, path: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])
        if not hasattr(command, "commands"):
            found.append(" ".join(path))

    walk(typer.main.get_command(app), [])
    return found


@functools.cache
def has_out(path: str) -> bool:
    return "--out" in command_flags(path.split()).values()


CASES = [(path, row) for path, rows in SWEEP.items() for row in [*rows, r("--no-such-flag", says="--no-such-flag")]]


def test_every_command_has_rows() -> None:
    assert sorted(command_paths()) == sorted(SWEEP)
    assert len(CASES) >= 300  # the number of bad-input cases in the sweep (README's count comes from here)


def test_every_numeric_option_is_checked_when_parsed() -> None:
    checked, unchecked = [], []
    root = typer.main.get_command(app)
    for path in command_paths():
        command = root
        for name in path.split():
            command = command.commands[name]
        for p in command.params:
            if p.bare_type() in ("int", "float"):  # the annotation's type, Optional unwrapped
                (checked if hasattr(p.callback, "lmscope_check") else unchecked).append(f"{path} {p.opts[0]}")
    assert unchecked == [] and len(checked) >= 70


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Bad (and a few good) files: each name of the rows' `{name}` placeholders."""
    from lmscope.activations import ExtractConfig, extract

    root = tmp_path_factory.mktemp("sweep")
    (root / "text.txt").write_text("the senator voted\nthe chef cooked soup\n")
    (root / "empty.txt").write_text("")
    (root / "junk.txt").write_bytes(b"\xff\xfe\x00\x81 binary\n")
    (root / "junk.gguf").write_bytes(b"GGUF\x00\x01junk")
    (root / "junk.conllu").write_bytes(b"\x00\xff\x81\n")
    (root / "empty.conllu").write_text("")
    (root / "labels.conllu").write_text(CONLLU)
    (root / "bad.json").write_text("{not json")
    (root / "bad.jsonl").write_text("{not json\n")
    (root / "wrong.jsonl").write_text("[1, 2]\n")
    (root / "rows.jsonl").write_text(json.dumps({"text": "the senator voted", "t": 1, "c": "a"}) + "\n")
    (root / "afile").write_text("keep")
    (root / "adir").mkdir()
    for name, text in (("broken_store", "{"), ("schema_store", '{"format": 1}')):
        (root / name).mkdir()
        (root / name / "manifest.json").write_text(text)
    for name, text in (("broken_result", "{"), ("schema_result", '{"kind": 3}')):
        (root / name).mkdir()
        (root / name / "result.json").write_text(text)
    (root / "broken_dict").mkdir()
    (root / "broken_dict" / "cfg.json").write_text("{")
    (root / "broken_stack" / "layer1").mkdir(parents=True)
    (root / "broken_stack" / "layer1" / "cfg.json").write_text('{"d_in": "x"}')
    extract(HookedModel.from_pretrained(M), SENTENCES, root / "store", ExtractConfig(("blocks.0.mlp.hook_post",)),
            model_id=M, corpus_path=str(root / "text.txt"))
    named = {"text": "text.txt", "empty": "empty.txt", "junk": "junk.txt", "junk_gguf": "junk.gguf",
             "junk_conllu": "junk.conllu", "empty_conllu": "empty.conllu", "labels": "labels.conllu",
             "badjson": "bad.json", "badjsonl": "bad.jsonl", "wrongjsonl": "wrong.jsonl", "rows": "rows.jsonl",
             "afile": "afile", "adir": "adir", "broken_store": "broken_store", "schema_store": "schema_store",
             "broken_dict": "broken_dict", "broken_result": "broken_result", "schema_result": "schema_result",
             "broken_stack": "broken_stack", "store": "store",
             "missing": "missing.txt", "under_file": "afile/sub"}
    return {key: str(root / name) for key, name in named.items()}


@pytest.mark.parametrize(("path", "row"), CASES, ids=[f"{p}:{' '.join(r.args)}" for p, r in CASES])
def test_bad_input_is_one_line_exit_2_before_any_work(path: str, row: Row, files: dict[str, str], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    real = HookedModel.from_pretrained.__func__  # type: ignore[attr-defined]

    def counting(cls: type[HookedModel], name: str, *args: Any, **kwargs: Any) -> HookedModel:
        loads.append(name)
        return real(cls, name, *args, **kwargs)

    monkeypatch.setattr(HookedModel, "from_pretrained", classmethod(counting))
    args = [a.format(**files) for a in row.args]
    out_dir = tmp_path / "out"
    if row.out and has_out(path):
        args += ["--out", str(out_dir)]
    code, stdout, err = run(capsys, *path.split(), *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("lmscope: error: "), err
    assert row.says.format(**files) in lines[0] and "Traceback" not in err and stdout == "", err
    assert not out_dir.exists() and Path(files["afile"]).read_text() == "keep"
    assert row.model or loads == [], f"refused only after loading {loads}"


def test_library_errors_name_arguments_and_the_cli_names_flags() -> None:
    e = bad_argument("batch_size", "an integer >= 1", 0)
    assert str(e) == "batch_size: expected an integer >= 1, got 0" and e.arg == "batch_size"
    flags = command_flags(["heads", "wild"])
    assert flags["batch_size"] == "--batch-size" and flags["model"] == "MODEL"
    assert flag_message(e, flags) == "--batch-size: expected an integer >= 1, got 0"
    assert flag_message(bad_argument("chunk_bytes", "a size", -1), {}) == "--chunk-bytes: expected a size, got -1"
    assert flag_message(bad_argument("l1_coefficient", "a number", "x"), {}).startswith("--l1: ")
    assert flag_message(InputError("mode: got 'x'"), command_flags(["heads", "succession"])).startswith("--mode: ")
    assert flag_message(InputError("mode: got 'x'"), {}) == "mode: got 'x'"  # not an argument of this command
    assert flag_message(InputError("store.json: line 3 is bad"), flags) == "store.json: line 3 is bad"


def test_library_refusals_name_python_arguments_and_each_command_shows_its_flag(tmp_path: Path) -> None:
    """Real library refusals (no flag in their text) through `flag_message` with the command that reaches them."""
    from lmscope.autointerp import LocalLM, OpenAIClient
    from lmscope.circuits.paths import find_paths
    from lmscope.data.corpus import load_corpus
    from lmscope.data.export import export_synthetic
    from lmscope.dictionary.multi import parse_layers
    from lmscope.dictionary.stack import load_transcoders
    from lmscope.dictionary.train import plan_checkpoints
    from lmscope.fileio import check_output_dir
    from lmscope.heads.arithmetic import residue_pairs

    (tmp_path / "afile").write_text("x")
    cases: list[tuple[Any, list[str], str, str]] = [
        (lambda: residue_pairs(3, None), ["heads", "edit"], "to_residue: expected a residue 0-9, got None",
         "--to: expected a residue 0-9, got None"),
        (lambda: residue_pairs(None, 3), ["heads", "edit"], "from_residue: ", "--from: "),
        (lambda: load_transcoders(tmp_path / "nope"), ["circuit"], "directory: ", "--transcoders: "),
        (lambda: find_paths(None, None, n_iters=0), ["circuit"], "n_iters: expected a positive integer, got 0",  # type: ignore[arg-type]
         "--iters: expected a positive integer, got 0"),
        (lambda: find_paths(None, None, beam=0), ["circuit"], "beam: ", "--beam: "),  # type: ignore[arg-type]
        (lambda: plan_checkpoints(tmp_path / "o", 10, -1, overwrite=False), ["dict", "train"], "every: ",
         "--checkpoint-every: expected 0 (none) or a positive number of steps, got -1"),
        (lambda: parse_layers("x", None), ["dict", "train"], "layers: expected 'all'", "--layers: expected 'all'"),
        (lambda: OpenAIClient("file:///x", "m"), ["autointerp", "score"], "base_url: file:///x: ",
         "--llm-url: file:///x: expected an http:// or https:// URL"),
        (lambda: LocalLM("m", dtype="float16"), ["autointerp", "score"], "dtype: expected bfloat16 or float32",
         "--llm-dtype: expected bfloat16 or float32, got 'float16'"),
        (lambda: export_synthetic(tmp_path / "d", n_samples=0), ["data", "synthetic"], "n_samples: ",
         "--samples: expected a positive number of samples, got 0"),
        (lambda: check_output_dir(tmp_path / "afile"), ["extract"], "out_dir: ", "--out: "),
        (lambda: check_output_dir(tmp_path / "afile"), ["zoo", "train"], "out_dir: ", "--out: "),
        (lambda: load_corpus(str(tmp_path / "missing.txt"), model_name="zoo:gpt2-tiny"), ["dict", "eval"],
         "corpus: ", f"--corpus: {tmp_path / 'missing.txt'}: no such file"),
    ]
    for call, command, library, cli in cases:
        with pytest.raises(InputError) as caught:
            call()
        assert str(caught.value).startswith(library) and "--" not in str(caught.value), command
        assert flag_message(caught.value, command_flags(command)).startswith(cli), (command, str(caught.value))


def test_dict_train_layers_are_refused_before_any_progress_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`--layers` out of range: from config.json before loading; where the config cannot be read without loading
    (a hub id, real:NAME), on the loaded model, still before the first progress line."""
    from lmscope.cli import dictionary as cli_dictionary
    from lmscope.model.zoo import locate

    assert cli_dictionary._config_layers(M) == 4 and cli_dictionary._config_layers(str(locate("gpt2-tiny"))) == 4
    assert cli_dictionary._config_layers("someone/some-model") is None
    assert cli_dictionary._config_layers("real:smollm2-135m") is None
    monkeypatch.setattr(cli_dictionary, "_config_layers", lambda model: None)
    code, out, err = run(capsys, "dict", "train", M, "--layers", "0-99", "--out", str(tmp_path / "o"))
    assert code == 2 and out == "" and err == "lmscope: error: --layers: expected layers in 0..3, got '0-99'\n", err
    assert not (tmp_path / "o").exists()
