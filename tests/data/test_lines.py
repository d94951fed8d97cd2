"""JSON lines: blank lines skipped, every object with its file:line, a bad line named with what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmscope.data.lines import json_lines
from lmscope.errors import InputError


def test_json_lines_names_each_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n[2, 3]\n')
    assert list(json_lines(path, "expected rows")) == [(f"{path}:1", {"a": 1}), (f"{path}:3", [2, 3])]
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(InputError, match=r"rows\.jsonl:2: not valid JSON \(.*\); expected rows$"):
        list(json_lines(path, "expected rows"))
