"""`lmscope.causal.inputs`: input files, outcome specs and plugins, each refused naming its argument."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmscope.causal.inputs import (
    check_differentiable,
    check_outcome,
    check_outcome_files,
    default_outcome,
    read_rows,
    read_texts,
)
from lmscope.errors import InputError


def test_read_texts_and_rows(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first\n\n  \nsecond\n")
    (tmp_path / "a.jsonl").write_text('{"text": "x", "label": 1, "topic": "t"}\n\n{"text": 2, "label": 0}\n')
    assert read_texts(str(tmp_path / "a.txt")) == ["first", "second"]  # blank lines are not inputs
    assert read_texts(str(tmp_path / "a.jsonl")) == ["x", "2"]
    assert [r["label"] for r in read_rows(str(tmp_path / "a.jsonl"), ["label"])] == [1, 0]
    with pytest.raises(InputError, match=r"a\.jsonl:3: missing field 'topic' \(expected text, topic\)"):
        read_rows(str(tmp_path / "a.jsonl"), ["text", "topic"])
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(InputError, match=r"blank\.txt: no inputs \(expected one per line\)"):
        read_texts(str(tmp_path / "blank.txt"))


def test_outcome_specs_name_their_argument() -> None:
    check_outcome("prob", " a", None)  # complete: no error
    check_outcome("py:anything:f", None, None)  # plugins and classifiers are checked with their files
    for spec, target, foil, arg, says in (("nope", None, None, "metric", "metric: got 'nope', expected one of"),
                                          ("prob", None, None, "target", "target: required for prob"),
                                          ("logit-diff", " a", None, "foil", "foil: required for logit-diff")):
        with pytest.raises(InputError, match=f"^{says}") as caught:
            check_outcome(spec, target, foil, arg="metric")
        assert caught.value.arg == arg
    check_differentiable("log-toxicity")
    for spec in ("toxicity-hit", "toxicity-continuation", "classifier:dir"):
        with pytest.raises(InputError, match=f"^metric: {spec} has no gradient"):
            check_differentiable(spec, arg="metric")


def test_outcome_files_are_checked_before_a_model(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^outcome: classifier:.*nowhere: no such directory") as caught:
        check_outcome_files(f"classifier:{tmp_path / 'nowhere'}", None)
    assert caught.value.arg == "outcome"
    with pytest.raises(InputError, match=r"words\.txt: no such file"):
        check_outcome_files("toxicity", str(tmp_path / "words.txt"))
    with pytest.raises(InputError, match=r"^metric: py:no_such_module_q: expected py:MODULE:FUNCTION"):
        check_outcome_files("py:no_such_module_q", None, arg="metric")
    (tmp_path / "words.txt").write_text("idiot\n")
    check_outcome_files("toxicity", str(tmp_path / "words.txt"))
    check_outcome_files(f"classifier:{tmp_path}", None)  # a directory: read when the model is there


def test_default_outcome() -> None:
    assert default_outcome("zoo:gpt2-tiny", None) == "toxicity" and default_outcome("m", "prob") == "prob"
    with pytest.raises(InputError, match=r"^outcome: m is not a zoo model") as caught:
        default_outcome("m", None)
    assert caught.value.arg == "outcome"


def test_positions_and_components() -> None:
    from lmscope.causal.inputs import EACH, check_components, parse_position, split_units

    assert [parse_position(t) for t in ("last", "all", "each", "3")] == [-1, None, EACH, 3]
    with pytest.raises(InputError, match=r"^position: got '-1', expected last, all, each or a position index"):
        parse_position("-1")  # from the end is what `last` is for
    assert split_units(" a:1, ,b:2 ") == ["a:1", "b:2"] and split_units(None) == []
    check_components("heads,mlp", [])
    with pytest.raises(InputError, match=r"components: got 'bogus'"):
        check_components("heads,bogus", [])
    with pytest.raises(InputError, match=r"unit 'blocks\.1\.mlp\.hook_post:x'"):
        check_components("neurons", ["blocks.1.mlp.hook_post:x"])


def test_a_plugin_that_fails_to_import_is_one_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmscope.causal.inputs import load_plugin

    (tmp_path / "broken_scorer_q.py").write_text("def score(logits, index)\n    return 1\n")
    (tmp_path / "raising_scorer_q.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"^outcome: py:broken_scorer_q:score: cannot load it \(SyntaxError: "):
        load_plugin("broken_scorer_q:score")
    with pytest.raises(InputError, match=r"cannot load it \(RuntimeError: no GPU here\)"):
        load_plugin("raising_scorer_q:score")
    with pytest.raises(InputError, match=r"^outcome: py:os:sep: sep is not callable"):
        load_plugin("os:sep")
