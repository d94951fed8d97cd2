"""Every result class lmscope saves: its result.json names its kind and the lmscope version, and (where the file
holds everything) save -> load gives the same result back. Old files without kind load where the kind shows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import lmscope.autointerp.result
import lmscope.causal.results
import lmscope.circuits.analysis
import lmscope.heads.arithmetic
import lmscope.heads.detectors
import lmscope.heads.mod10
import lmscope.heads.wild
import lmscope.neurons.ablation
import lmscope.neurons.analysis
import lmscope.neurons.evaluation
import lmscope.whitebox.compare  # noqa: F401  (every module with a result class, so its subclass is known)
from lmscope import __version__
from lmscope.errors import InputError
from lmscope.fileio import atomic_write_json
from lmscope.results import ResultMixin, read_result
from report.built_results import BUILDERS

SUMMARY_ONLY = {"mod10_features", "circuit"}
"""Kinds whose result.json leaves out what rebuilding needs (mod-10 directions; a circuit's full trace)."""


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def test_every_result_class_has_its_own_kind_and_a_built_example() -> None:
    classes = [c for c in _subclasses(ResultMixin) if c.__module__.startswith("lmscope.")]
    kinds = [c.kind for c in classes]
    assert len(kinds) == len(set(kinds)) and all(kinds)
    assert set(kinds) - {"circuit"} == set(BUILDERS)  # the circuit is built by tracing (tests/report/test_rebuild)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_result_json_names_kind_and_version(kind: str, tmp_path: Path) -> None:
    path = BUILDERS[kind]().save(tmp_path)
    d = json.loads((path["json"] if isinstance(path, dict) else path).read_text())
    assert list(d)[:2] == ["kind", "version"] and (d["kind"], d["version"]) == (kind, __version__)


def _same(a: object, b: object) -> bool:
    """Equal, with tensors compared by value and NaN equal to NaN."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a.double(), b.double()))
    if isinstance(a, float) and math.isnan(a):
        return b is None or (isinstance(b, float) and math.isnan(b))  # in memory NaN, in the file null
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("kind", sorted(set(BUILDERS) - SUMMARY_ONLY))
def test_save_then_load_gives_the_same_result(kind: str, tmp_path: Path) -> None:
    original = BUILDERS[kind]()
    original.save(tmp_path)
    back = type(original).load(tmp_path)
    assert type(back) is type(original) and back.version == __version__
    assert all(_same(getattr(original, f), getattr(back, f)) for f in original.__dataclass_fields__)
    assert back.to_dict() == json.loads(json.dumps(original.to_dict()))


def test_summary_only_results_are_read_as_dicts(tmp_path: Path) -> None:
    mod10 = BUILDERS["mod10_features"]()
    mod10.save(tmp_path)
    d = read_result(tmp_path, kind="mod10_features")
    assert d["features"][3]["feature"] == 43 and d["scales"] == [2.5] * 10 and "directions" not in d
    with pytest.raises(NotImplementedError, match="read it with read_result"):
        type(mod10).load(tmp_path)


@pytest.mark.parametrize("kind", ["head_detectors", "vector_arithmetic", "heads_in_the_wild", "activation_patching",
                                  "mediation", "mod10_features"])
def test_an_old_file_without_kind_is_read_by_the_keys_it_has(kind: str, tmp_path: Path) -> None:
    result = BUILDERS[kind]()
    old = {k: v for k, v in json.loads(json.dumps(result.to_dict())).items() if k != "kind"}
    atomic_write_json(tmp_path / "result.json", old)
    d = read_result(tmp_path)
    assert d["kind"] == kind and d["version"] is None
    if kind not in SUMMARY_ONLY:
        assert type(result).load(tmp_path).to_dict() == json.loads(json.dumps(result.to_dict()))


def test_an_old_file_the_keys_do_not_tell_is_refused_unless_the_caller_names_its_kind(tmp_path: Path) -> None:
    old = {k: v for k, v in BUILDERS["selectivity"]().to_dict().items() if k != "kind"}
    atomic_write_json(tmp_path / "result.json", old)
    with pytest.raises(InputError, match=r"names no 'kind' .* its keys do not show which result it is"):
        read_result(tmp_path)
    assert BUILDERS["selectivity"]().__class__.load(tmp_path).selectivity == 0.3125


def test_a_file_of_another_kind_is_refused_naming_both(tmp_path: Path) -> None:
    BUILDERS["selectivity"]().save(tmp_path)
    with pytest.raises(InputError, match=r"result\.json: holds a 'selectivity' result, expected 'neuron_ranking'"):
        type(BUILDERS["neuron_ranking"]()).load(tmp_path)


def test_a_ranking_evaluation_is_saved_as_neuron_evaluation_and_drawn(tmp_path: Path) -> None:
    """`evaluate_ranking` on planted neurons (17 fires on class 2, 40 on class 1): its dict names its own kind (the
    accuracy-at-k part it contains used to overwrite it) and the report draws it."""
    import numpy as np

    from lmscope.neurons.analysis import evaluate_ranking, rank_neurons
    from lmscope.neurons.dataset import NeuronDataset
    from lmscope.report.rebuild import rebuild_report
    from lmscope.results import write_result
    from neurons.planted import CLASS1_NEURON, CLASS2_NEURON, planted

    X, y = planted(600)
    units = [f"blocks.0.mlp.hook_post:{i}" for i in range(X.shape[1])]
    data = NeuronDataset(X, y, ["A", "B", "C"], units, np.arange(len(y)) // 5, ["w"] * len(y))
    ranking = rank_neurons(data, "probeless")
    assert set(ranking.units(2)) == {units[CLASS1_NEURON], units[CLASS2_NEURON]}
    write_result(tmp_path, evaluate_ranking(data, ranking, [2]))
    d = read_result(tmp_path, kind="neuron_evaluation")
    assert d["method"] == "probeless" and d["ks"] == [2] and d["top"][0] == pytest.approx(1.0, abs=0.02)
    assert [s.key for s in rebuild_report([tmp_path]).sections] == ["neuron_evaluation"]


def test_a_comparison_saves_the_page_it_is_given_beside_its_result(tmp_path: Path) -> None:
    from lmscope.report.whitebox_sections import comparison_page

    result = BUILDERS["whitebox_comparison"]()
    page = comparison_page(result.to_dict())
    assert "crate vs gpt" in page and f"{result.per_model['gpt']['heldout_loss']:.4f}" in page
    paths = result.save(tmp_path, html=page)
    assert paths["html"].read_text() == page and read_result(paths["json"])["models"] == ["crate", "gpt"]


def test_an_undefined_number_is_written_null_and_read_back_as_nan(tmp_path: Path) -> None:
    from dataclasses import replace

    arithmetic = replace(BUILDERS["vector_arithmetic"](), rates={"numbers": float("nan"), "days": 0.5})
    ablation = replace(BUILDERS["neuron_ablation"](), random_loss=float("inf"))
    for i, result in enumerate((arithmetic, ablation)):
        result.save(tmp_path / str(i))
        assert "NaN" not in (tmp_path / str(i) / "result.json").read_text()
    assert read_result(tmp_path / "0")["rates"]["numbers"] is None
    assert math.isnan(type(arithmetic).load(tmp_path / "0").rates["numbers"])
    assert math.isnan(type(ablation).load(tmp_path / "1").random_loss)  # inf is not strict JSON either
