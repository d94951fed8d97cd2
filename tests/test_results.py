"""The results layer: json_safe, the one writer (kind + version always there, nothing half-written, nothing
clobbered) and the reader (untrusted file: one InputError line naming it)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from lmscope import __version__
from lmscope.errors import InputError
from lmscope.results import Result, ResultMixin, json_safe, numbers, read_result, to_list, write_result


@dataclass
class Planted(ResultMixin):
    kind: ClassVar[str] = "planted"
    values: list[float]
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values, "label": self.label}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Planted:
        return cls([float(v) for v in d["values"]], str(d["label"]))


@dataclass
class SummaryOnly(ResultMixin):
    kind: ClassVar[str] = "summary_only"
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n}


def test_json_safe_makes_strict_json_of_numpy_torch_paths_and_non_finite() -> None:
    got = json_safe({"a": np.float32(0.5), "b": torch.tensor([[1, 2]]), "c": (1, float("nan")), "d": Path("x/y"),
                     3: {np.int64(2)}, "e": float("inf")})
    assert got == {"a": 0.5, "b": [[1, 2]], "c": [1, None], "d": "x/y", "3": [2], "e": None}
    assert to_list(np.arange(3)) == [0, 1, 2]
    with pytest.raises(TypeError, match=r"^cannot put a object into result\.json: <object object at 0x[0-9a-f]+>$"):
        json_safe(object())


def test_numbers_reads_null_back_as_nan() -> None:
    got = numbers([[1, None], [2.5, 3]])
    assert got[0][0] == 1.0 and np.isnan(got[0][1]) and got[1] == [2.5, 3.0]
    with pytest.raises(TypeError, match=r"^float\(\) argument must be a string or a real number, not 'dict'$"):
        numbers([{"a": 1}])


def test_save_writes_kind_and_version_first_and_load_round_trips(tmp_path: Path) -> None:
    r = Planted([1.5, -2.0], "x")
    assert isinstance(r, Result)
    path = r.save(tmp_path / "out")
    assert path == tmp_path / "out" / "result.json"
    d = json.loads(path.read_text())
    assert list(d)[:2] == ["kind", "version"]
    assert d == {"kind": "planted", "version": __version__, "values": [1.5, -2.0], "label": "x"}
    back = Planted.load(tmp_path / "out")
    assert back == r and back.version == __version__
    assert Planted.load(path) == r  # the file form


def test_write_result_refuses_to_clobber_and_writes_neither_file_when_one_exists(tmp_path: Path) -> None:
    (tmp_path / "report.html").write_text("mine")
    exists = re.escape(f"{tmp_path / 'report.html'}: already exists; pass --overwrite (overwrite=True) to replace it")
    with pytest.raises(InputError, match=f"^{exists}$"):
        write_result(tmp_path, Planted([1.0]), html="<p>new</p>")
    assert not (tmp_path / "result.json").exists() and (tmp_path / "report.html").read_text() == "mine"
    paths = write_result(tmp_path, Planted([1.0]), html="<p>new</p>", overwrite=True)
    assert paths["html"].read_text() == "<p>new</p>" and json.loads(paths["json"].read_text())["kind"] == "planted"
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="^" + re.escape(f"{tmp_path / 'file'}: is a file, expected an output "
                                                         "directory") + "$"):
        write_result(tmp_path / "file", Planted([1.0]))


def test_save_writes_the_page_beside_the_result_when_given_one(tmp_path: Path) -> None:
    (tmp_path / "report.html").write_text("mine")
    exists = re.escape(f"{tmp_path / 'report.html'}: already exists; pass --overwrite (overwrite=True) to replace it")
    with pytest.raises(InputError, match=f"^{exists}$"):
        Planted([2.0]).save(tmp_path, html="<p>page</p>")
    assert not (tmp_path / "result.json").exists()
    assert Planted([2.0]).save(tmp_path, html="<p>page</p>", overwrite=True) == tmp_path / "result.json"
    assert (tmp_path / "report.html").read_text() == "<p>page</p>" and Planted.load(tmp_path) == Planted([2.0])


def test_write_result_takes_a_mapping_with_its_kind_and_adds_the_version(tmp_path: Path) -> None:
    write_result(tmp_path, {"kind": "neuron_evaluation", "top": np.array([0.5, 1.0])})
    assert read_result(tmp_path) == {"kind": "neuron_evaluation", "version": __version__, "top": [0.5, 1.0]}
    with pytest.raises(ValueError, match=r"^a result needs a kind of lowercase letters, digits and '_', got None$"):
        write_result(tmp_path / "b", {"top": 1})


def test_a_class_whose_to_dict_names_another_kind_is_refused(tmp_path: Path) -> None:
    class Wrong(SummaryOnly):
        def to_dict(self) -> dict[str, Any]:
            return {"kind": "other", "n": self.n}

    with pytest.raises(ValueError, match=r"^Wrong\.to_dict\(\) names kind 'other', its class 'summary_only'$"):
        Wrong(1).save(tmp_path)


def test_a_summary_only_result_saves_but_is_read_with_read_result(tmp_path: Path) -> None:
    SummaryOnly(4).save(tmp_path)
    assert read_result(tmp_path, kind="summary_only")["n"] == 4
    with pytest.raises(NotImplementedError, match=r"^SummaryOnly is not rebuilt from its result\.json; read it with "
                                                  r"read_result$"):
        SummaryOnly.load(tmp_path)


@pytest.mark.parametrize(("text", "words"), [
    (None, "no such file; expected a result.json written by lmscope"),
    ("{not json", "not JSON (Expecting property name enclosed in double quotes at line 1); expected a result.json"),
    ("[1, 2]", "holds a JSON list, expected an object with a 'kind'"),
    ('{"kind": 3}', "'kind' is 3, expected a name such as 'neuron_ranking'"),
    ('{"kind": "Bad Kind"}', "'kind' is 'Bad Kind', expected a name such as 'neuron_ranking'"),
    ('{"kind": "other"}', "holds a 'other' result, expected 'planted'"),
    ('{"kind": "planted", "values": [NaN]}', "holds NaN, which strict JSON has not (lmscope writes null)"),
    ('{"kind": "planted", "version": 2}', "'version' is 2, expected the lmscope version string"),
    ('{"kind": "planted", "values": "abc"}', "not a planted result (ValueError("),
    ('{"kind": "planted", "values": [1]}', "not a planted result (KeyError('label'))"),  # no label
])
def test_load_refuses_a_bad_file_in_one_line_naming_it(tmp_path: Path, text: str | None, words: str) -> None:
    if text is not None:
        (tmp_path / "result.json").write_text(text)
    with pytest.raises(InputError, match="^" + re.escape(f"{tmp_path / 'result.json'}: {words}")) as info:
        Planted.load(tmp_path)
    assert "\n" not in str(info.value)


def test_an_old_file_without_kind_loads_as_the_kind_asked_for_and_is_refused_otherwise(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text('{"values": [3.0], "label": "old"}')
    old = Planted.load(tmp_path)
    assert old == Planted([3.0], "old") and old.version is None
    assert read_result(tmp_path, kind="planted")["kind"] == "planted"
    no_kind = re.escape(f"{tmp_path / 'result.json'}: names no 'kind' (written before lmscope recorded one) and its "
                        "keys do not show which result it is; load it with its analysis' own load()")
    with pytest.raises(InputError, match=f"^{no_kind}$"):
        read_result(tmp_path)
    with pytest.raises(InputError, match=f"^{no_kind}$"):
        read_result(tmp_path, kind={"planted", "other"})


def test_read_result_accepts_any_of_several_kinds(tmp_path: Path) -> None:
    Planted([1.0]).save(tmp_path)
    assert read_result(tmp_path, kind={"planted", "other"})["values"] == [1.0]
    with pytest.raises(InputError, match="^" + re.escape(f"{tmp_path / 'result.json'}: holds a 'planted' result, "
                                                         "expected 'a' or 'b'") + "$"):
        read_result(tmp_path, kind=["b", "a"])
