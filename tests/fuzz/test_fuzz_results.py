"""Fuzzing result files that commands read back (`neurons ablate --ranking DIR`): a result.json of any content
gives a usable value or an InputError.

`NeuronRanking.load` (lmscope.neurons.analysis, through lmscope.results.read_result) checks every entry's types
and `read_result` turns bad bytes, deep nesting and build errors into one line: no traceback later.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fuzz.fuzz_helpers import json_values, valid_or_input_error
from lmscope.model.units import Unit
from lmscope.neurons.analysis import NeuronRanking

entries = st.lists(st.fixed_dictionaries({"point": st.just("blocks.0.mlp.hook_post") | json_values,
                                          "neuron": st.integers(0, 9) | json_values,
                                          "score": st.floats(allow_nan=False) | json_values}) | json_values,
                   max_size=3)
rankings = st.fixed_dictionaries(
    {"kind": st.just("neuron_ranking"), "method": st.just("lca") | json_values, "params": json_values,
     "ranking": entries | json_values, "per_class": st.dictionaries(st.text(max_size=3), entries) | json_values,
     "n_rows": st.integers(0, 9) | json_values, "labels": st.lists(st.text(max_size=3)) | json_values})


def _use(path: Path) -> list[str]:
    r = NeuronRanking.load(path)
    units = r.units(5) + [u for label in r.per_class for u in r.units(3, label)]
    for u in units:
        Unit.parse(u)
    return units


def test_a_written_ranking_reads_back(scratch: Path) -> None:
    r = NeuronRanking("lca", {"seed": 0}, [{"point": "blocks.0.mlp.hook_post", "neuron": 3, "score": 0.5}],
                      {"A": [{"point": "blocks.0.mlp.hook_post", "neuron": 1, "score": 0.2}]}, 10, ["A"])
    r.save(scratch / "good", overwrite=True)
    assert _use(scratch / "good") == ["blocks.0.mlp.hook_post:3", "blocks.0.mlp.hook_post:1"]


@settings(max_examples=100, report_multiple_bugs=False)  # the first failure is the xfail's exception
@given(content=rankings.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=50))
@example(content=json.dumps({"kind": "neuron_ranking", "method": "lca", "params": {}, "ranking": [5],
                             "per_class": {}, "n_rows": 1, "labels": []}).encode())
def test_neuron_ranking_files(scratch: Path, content: bytes) -> None:
    (scratch / "r").mkdir(exist_ok=True)
    (scratch / "r" / "result.json").write_bytes(content)
    valid_or_input_error(lambda: _use(scratch / "r"))
