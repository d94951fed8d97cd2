"""Unit strings parse to what they name and print back unchanged."""

from __future__ import annotations

import re

import pytest

from lmscope.errors import InputError
from lmscope.model.units import Unit, UnitSet


@pytest.mark.parametrize(
    ("text", "kind", "hook", "index", "position"),
    [
        ("blocks.1.mlp.hook_post:7", "neuron", "blocks.1.mlp.hook_post", 7, None),
        ("blocks.3.attn:2", "head", "blocks.3.attn.hook_z", 2, None),
        ("blocks.3.attn:2@4", "head", "blocks.3.attn.hook_z", 2, 4),
        ("blocks.2.hook_resid_post", "site", "blocks.2.hook_resid_post", None, None),
        ("blocks.2.hook_resid_post@-1", "site", "blocks.2.hook_resid_post", None, -1),
        ("dict:/tmp/tc/layer0:123", "feature", "/tmp/tc/layer0.hook_sae_acts_post", 123, None),
    ],
)
def test_parse_and_roundtrip(text: str, kind: str, hook: str, index: int | None, position: int | None) -> None:
    unit = Unit.parse(text)
    assert (unit.kind, unit.hook, unit.index, unit.position) == (kind, hook, index, position)
    assert str(unit) == text
    if kind == "feature":
        assert unit.dictionary == "/tmp/tc/layer0"


@pytest.mark.parametrize(("bad", "expected"), [
    ("", "e.g. 'blocks.1.mlp.hook_post:7' or 'blocks.3.attn:2'"),
    ("blocks.1.mlp.hook_post:x", "'<hook name>:<non-negative index>'"), (":3", "'<hook name>:<non-negative index>'"),
    ("dict:abc", "'dict:<path>:<feature index>'"), ("dict::4", "'dict:<path>:<feature index>'")])
def test_bad_units(bad: str, expected: str) -> None:
    with pytest.raises(InputError, match="^" + re.escape(f"unit {bad!r}: expected {expected}") + "$"):
        Unit.parse(bad)


def test_unitset_dedups_and_groups() -> None:
    units = UnitSet(["blocks.0.attn:1", "blocks.0.attn:1", "blocks.1.mlp.hook_post:3", "blocks.0.attn:2"])
    assert len(units) == 3
    assert list(units.by_hook()) == ["blocks.0.attn.hook_z", "blocks.1.mlp.hook_post"]
    assert Unit.parse("blocks.0.attn:2") in units
    assert UnitSet.coerce("blocks.0.attn:2").units == (Unit("head", "blocks.0.attn.hook_z", 2),)
