"""Readers of user files refuse odd input in one line naming the file (cases the fuzz suite found)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmscope.data.corpus import read_documents
from lmscope.data.labels import read_labels
from lmscope.data.lines import read_lines
from lmscope.data.samples import read_jsonl
from lmscope.errors import InputError


def test_nul_byte_in_a_path() -> None:
    with pytest.raises(InputError, match=r"^'a\\x00b': not a usable file name \(embedded null byte\)$"):
        read_lines("a\0b")


def test_deeply_nested_json_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(InputError, match=r"deep\.jsonl:1: JSON nested too deeply; expected"):
        read_labels(path)  # the format sniffer gives up quietly, the JSONL parser names the line
    with pytest.raises(InputError, match=r"deep\.jsonl:1: JSON nested too deeply"):
        read_documents(path)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("task", ["digits"], r"field 'task': expected a string or null, got \['digits'\]"),
    ("topic", 3, r"field 'topic': expected a string or null, got 3"),
    ("toxic", "no", r"field 'toxic': expected true or false, got 'no'"),
    ("words", None, r"field 'words': does not equal text\.split"),
    ("words", 5, r"field 'words': does not equal text\.split"),
])
def test_sample_field_types(tmp_path: Path, field: str, value: object, message: str) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"text": "a b", "kind": "grammar", field: value}) + "\n")
    with pytest.raises(InputError, match=rf"s\.jsonl:1: {message}"):
        read_jsonl(path)


def test_write_jsonl_into_an_impossible_place(tmp_path: Path) -> None:
    from lmscope.data.samples import Sample, write_jsonl

    (tmp_path / "file").write_text("x")
    sample = Sample.from_words(["a", "b"], "grammar")
    with pytest.raises(InputError, match=r"file/s\.jsonl: cannot write \((File exists|Not a directory)\)$"):
        write_jsonl([sample], tmp_path / "file" / "s.jsonl")
    with pytest.raises(InputError, match=r"already exists"):
        write_jsonl([sample], tmp_path / "file")


@pytest.mark.parametrize(("name", "text", "message"), [
    ("e.conllu", "# only a comment\n\n", r"no sentences \(expected tab-separated token lines\)"),
    ("e.jsonl", "\n\n", r"no sentences \(expected \{\"tokens\": \[\.\.\.\], \"labels\": \[\.\.\.\]\} lines\)"),
    ("e.txt", "", r"no sentences \(expected one sentence per line\)"),
])
def test_a_label_file_without_sentences(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    (tmp_path / "e.labels").write_text("")
    with pytest.raises(InputError, match=rf"^{path}: {message}$"):
        read_labels(path, label_path=tmp_path / "e.labels")


def test_synthetic_samples_without_the_label(tmp_path: Path) -> None:
    from lmscope.data.samples import Sample, write_jsonl

    write_jsonl([Sample.from_words(["a", "b"], "grammar", pos=["DET", "NOUN"])], tmp_path / "s.jsonl")
    assert read_labels(tmp_path / "s.jsonl").labels == [["DET", "NOUN"]]
    with pytest.raises(InputError, match=r"s\.jsonl: no samples with 'topic' labels$"):
        read_labels(tmp_path / "s.jsonl", synthetic_label="topic")
