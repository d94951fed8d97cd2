"""Units: the one vocabulary for what analyses rank, ablate, patch, mediate and explain.

String forms (parsed by `Unit.parse`, printed by `str(unit)`):
  `blocks.1.mlp.hook_post:7`      neuron 7 of a hook point (the last dimension)
  `blocks.3.attn:2`               head 2 of layer 3 (acts on `blocks.3.attn.hook_z`)
  `blocks.2.hook_resid_post`      a whole hook point
  `...@5`                         suffix: only at position 5 (e.g. `blocks.1.mlp.hook_post:7@5`)
  `dict:<path>:123`               feature 123 of the dictionary at `<path>`: it acts on the hook point
                                  `<path>.hook_sae_acts_post`, which exists once that dictionary is attached
                                  to the model (`lmscope.dictionary.attach.attach_dictionaries`);
                                  `<path>.hook_sae_acts_post:123` (a store's column name) is the same unit
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from lmscope.errors import InputError
from lmscope.model.dictionaries import dictionary_name, feature_hook

UnitKind = Literal["neuron", "head", "site", "feature"]

_HEAD_RE = re.compile(r"^(blocks\.\d+\.attn)(?::(\d+))$")
_POS_RE = re.compile(r"^(.*)@(-?\d+)$")


@dataclass(frozen=True, order=True)
class Unit:
    """One unit: `hook` is the hook point it acts on, `index` the neuron/head/feature, `position` or None."""

    kind: UnitKind
    hook: str
    index: int | None = None
    position: int | None = None
    dictionary: str | None = None

    @classmethod
    def parse(cls, text: str) -> Unit:
        """Parse a unit string (see the module docstring); InputError names what was expected."""
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"unit {text!r}: expected e.g. 'blocks.1.mlp.hook_post:7' or 'blocks.3.attn:2'")
        text = text.strip()
        position = None
        pos_match = _POS_RE.match(text)
        if pos_match:
            text, position = pos_match.group(1), int(pos_match.group(2))
        if text.startswith("dict:"):
            path, _, feature = text[5:].rpartition(":")
            if not path or not feature.isdecimal():
                raise InputError(f"unit {text!r}: expected 'dict:<path>:<feature index>'")
            return cls("feature", feature_hook(path), int(feature), position, path)
        head = _HEAD_RE.match(text)
        if head:
            return cls("head", head.group(1) + ".hook_z", int(head.group(2)), position)
        hook, sep, index = text.rpartition(":")
        if sep:
            if not index.isdecimal() or not hook:
                raise InputError(f"unit {text!r}: expected '<hook name>:<non-negative index>'")
            name = dictionary_name(hook)
            if name is not None:  # `<path>.hook_sae_acts_post:7` is another spelling of `dict:<path>:7`
                return cls("feature", hook, int(index), position, name)
            return cls("neuron", hook, int(index), position)
        return cls("site", text, None, position)

    def __str__(self) -> str:
        pos = f"@{self.position}" if self.position is not None else ""
        if self.kind == "feature":
            return f"dict:{self.dictionary}:{self.index}{pos}"
        if self.kind == "head":
            return f"{self.hook.removesuffix('.hook_z')}:{self.index}{pos}"
        if self.kind == "neuron":
            return f"{self.hook}:{self.index}{pos}"
        return f"{self.hook}{pos}"


class UnitSet:
    """An ordered, duplicate-free set of units, groupable by hook point."""

    def __init__(self, units: Iterable[Unit | str] = ()) -> None:
        seen: dict[Unit, None] = {}
        for u in units:
            seen[Unit.parse(u) if isinstance(u, str) else u] = None
        self.units: tuple[Unit, ...] = tuple(seen)

    @classmethod
    def coerce(cls, units: UnitSet | Unit | str | Iterable[Unit | str]) -> UnitSet:
        if isinstance(units, UnitSet):
            return units
        if isinstance(units, Unit | str):
            return cls([units])
        return cls(units)

    def by_hook(self) -> dict[str, list[Unit]]:
        groups: dict[str, list[Unit]] = {}
        for u in self.units:
            groups.setdefault(u.hook, []).append(u)
        return groups

    def __iter__(self) -> Iterator[Unit]:
        return iter(self.units)

    def __len__(self) -> int:
        return len(self.units)

    def __contains__(self, unit: object) -> bool:
        return unit in self.units

    def __repr__(self) -> str:
        return f"UnitSet([{', '.join(repr(str(u)) for u in self.units)}])"
