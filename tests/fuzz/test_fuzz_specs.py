"""Fuzzing the small string languages of the CLI: unit strings, circuit targets, --layers, --outcome, --head,
the causal commands' input files and the LLM simulator's answers. Each parses to a valid value or raises
InputError; units print back to themselves.

The suite found `str.isdigit()` accepting digits such as '²' that `int()` refuses (unit strings, circuit
targets, head specs); the parsers now use `isdecimal()`, and the unicode-digit tests below keep it so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fuzz.fuzz_helpers import json_values, valid_or_input_error
from lmscope import HookedModel
from lmscope.autointerp.llm import parse_simulation
from lmscope.circuits.targets import parse_target
from lmscope.cli.causal import check_outcome
from lmscope.dictionary.multi import parse_layers
from lmscope.model.units import Unit, UnitSet
from tiny_models import tiny_hf_model

spec_chars = st.sampled_from(list("blocks.0123456789:@-,#attnmlphook_postdict/ ²٣")) | st.characters()
specs = st.text(spec_chars, max_size=30)
ascii_specs = st.text(st.sampled_from(list("blocks.0123456789:@-,#attnmlphook_postdict/ ")), max_size=30)


@pytest.fixture(scope="module")
def model() -> HookedModel:
    return HookedModel(tiny_hf_model("gpt2"), name="tiny")


@settings(max_examples=300)
@given(text=ascii_specs | st.builds(lambda h, i, p: f"{h}:{i}{p}", st.sampled_from(
    ["blocks.1.mlp.hook_post", "blocks.3.attn", "dict:runs/sae", "dict:a:b", ""]), st.integers(-2, 99),
    st.sampled_from(["", "@-1", "@3", "@x"])))
def test_unit_strings(text: str) -> None:
    ok, unit = valid_or_input_error(lambda: Unit.parse(text))
    if ok:
        assert Unit.parse(str(unit)) == unit  # a parsed unit prints back to a string naming the same unit
        assert len(UnitSet([text, unit])) == 1


@settings(max_examples=100)
@given(text=specs)
@example(text="blocks.1.mlp.hook_post:²")
def test_unit_strings_unicode_digits(text: str) -> None:
    valid_or_input_error(lambda: Unit.parse(text))


@settings(max_examples=200)
@given(spec=st.builds(lambda k, r: f"{k}:{r}", st.sampled_from(["logit", "feature", "greater-than", "x", ""]),
                      ascii_specs), pos=st.integers(-3, 3))
def test_circuit_targets(model: HookedModel, spec: str, pos: int) -> None:
    ok, target = valid_or_input_error(lambda: parse_target(spec, model, pos=pos))
    if ok:
        assert target.label == spec or target.label.startswith("greater-than")


@settings(max_examples=50)
@given(spec=specs.map(lambda s: "logit:#" + s))
@example(spec="logit:#²")
def test_circuit_targets_unicode_digits(model: HookedModel, spec: str) -> None:
    valid_or_input_error(lambda: parse_target(spec, model))


@settings(max_examples=200)
@given(spec=st.text(st.sampled_from(list("0123456789-, al")), max_size=12)
       .filter(lambda s: all(len(p) < 4 for p in s.replace("-", ",").split(","))),  # small ranges only (see report)
       n_layers=st.integers(1, 12))
def test_layer_lists(spec: str, n_layers: int) -> None:
    ok, layers = valid_or_input_error(lambda: parse_layers(spec, n_layers))
    if ok:
        assert layers == sorted(set(layers)) and layers and all(0 <= la < n_layers for la in layers)


@settings(max_examples=100)
@given(outcome=st.text(max_size=20) | st.sampled_from(["toxicity", "logit-diff", "prob", "classifier:", "py:"]),
       target=st.none() | st.text(max_size=3), foil=st.none() | st.text(max_size=3))
def test_outcome_specs(outcome: str, target: str | None, foil: str | None) -> None:
    valid_or_input_error(lambda: check_outcome(outcome, target, foil))


@settings(max_examples=100)
@given(text=st.text(st.sampled_from(list("ab\t \n\r-.0123456789٣e")), max_size=80), n=st.integers(0, 6))
def test_simulator_answers(text: str, n: int) -> None:
    out = parse_simulation(text, n)
    assert out.shape == (n,) and ((out >= 0) & (out <= 1)).all()


@settings(max_examples=100)
@given(text=st.text(st.sampled_from(list("0123456789.-x ")), max_size=6), n_layers=st.integers(1, 4),
       n_heads=st.integers(1, 4))
def test_head_specs(text: str, n_layers: int, n_heads: int) -> None:
    from lmscope.cli.heads import parse_head

    ok, head = valid_or_input_error(lambda: parse_head(text, n_layers, n_heads))
    if ok:
        assert 0 <= head[0] < n_layers and 0 <= head[1] < n_heads


@settings(max_examples=100)
@given(rows=st.lists(json_values | st.fixed_dictionaries({"text": json_values}), max_size=3),
       suffix=st.sampled_from([".jsonl", ".txt"]))
def test_causal_input_files(scratch: Path, rows: list[object], suffix: str) -> None:
    from lmscope.cli.causal import read_rows, read_texts

    path = scratch / f"inputs{suffix}"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ok, texts = valid_or_input_error(lambda: read_texts(str(path)))
    if ok:
        assert texts and all(isinstance(t, str) for t in texts)
    if suffix == ".jsonl":
        valid_or_input_error(lambda: read_rows(str(path), ["text", "label"]))
