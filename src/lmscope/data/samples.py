"""Record types of the synthetic corpus and their JSONL file format.

`Sample` is one line of generated text with its ground truth (POS tags, succession items, topic,
toxicity, task metadata). `EvalPrompt` and `GreaterThanPrompt` are prompts cut right before a known
answer. Samples travel as JSON lines so a corpus can be generated once and reused by every analysis.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmscope.data.lines import json_lines
from lmscope.errors import InputError
from lmscope.fileio import atomic_write_text

KINDS: tuple[str, ...] = ("grammar", "sequence", "template", "greater_than", "topic")
"""Every value `Sample.kind` can take."""

UPOS_TAGS: tuple[str, ...] = (
    "DET", "ADJ", "NOUN", "VERB", "ADP", "PRON", "ADV", "CCONJ", "PROPN", "AUX", "NUM", "PUNCT",
)  # fmt: skip
"""The Universal POS tags the generators use (a subset of UD's 17)."""


@dataclass(frozen=True)
class Sample:
    """One generated line of text and everything known to be true about it.

    `words` is `text.split(" ")`; `pos` and `item_positions` (when set) have one entry per word.
    `item_positions[i]` is the index of word i in the list of `task` (or -1 for a non-item word).
    """

    text: str
    kind: str
    words: tuple[str, ...]
    pos: tuple[str, ...] | None
    task: str | None = None
    item_positions: tuple[int, ...] | None = None
    topic: str | None = None
    toxic: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse a sample whose per-word annotations do not line up with its words."""
        if self.kind not in KINDS:
            raise ValueError(f"kind: got {self.kind!r}, expected one of {', '.join(KINDS)}")
        if tuple(self.text.split(" ")) != tuple(self.words):
            raise ValueError(f"words: do not equal text.split(' ') for text {self.text!r}")
        n = len(self.words)
        if self.pos is not None and len(self.pos) != n:
            raise ValueError(f"pos: got {len(self.pos)} tags for {n} words in {self.text!r}")
        if self.item_positions is not None and len(self.item_positions) != n:
            raise ValueError(f"item_positions: got {len(self.item_positions)} entries for {n} words")

    @classmethod
    def from_words(
        cls,
        words: Iterable[str],
        kind: str,
        pos: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> Sample:
        """Build a sample from its words (joined with single spaces)."""
        words_t = tuple(words)
        return cls(
            text=" ".join(words_t),
            kind=kind,
            words=words_t,
            pos=None if pos is None else tuple(pos),
            **kwargs,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; `words` is left out because it is `text.split(" ")`."""
        return {
            "text": self.text,
            "kind": self.kind,
            "pos": None if self.pos is None else list(self.pos),
            "task": self.task,
            "item_positions": None if self.item_positions is None else list(self.item_positions),
            "topic": self.topic,
            "toxic": self.toxic,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Sample:
        """Inverse of `to_dict`; a wrong or missing field raises InputError naming it."""
        if not isinstance(d, Mapping):
            raise InputError(f"expected a JSON object, got {type(d).__name__}")
        for key in ("text", "kind"):
            if not isinstance(d.get(key), str):
                raise InputError(f"field {key!r}: expected a string, got {d.get(key)!r}")
        text: str = d["text"]
        pos = d.get("pos")
        items = d.get("item_positions")
        meta = d.get("meta") or {}
        if pos is not None and not (isinstance(pos, list) and all(isinstance(t, str) for t in pos)):
            raise InputError(f"field 'pos': expected a list of strings or null, got {pos!r}")
        if items is not None and not (isinstance(items, list) and all(type(i) is int for i in items)):
            raise InputError(f"field 'item_positions': expected a list of integers or null, got {items!r}")
        if not isinstance(meta, dict):
            raise InputError(f"field 'meta': expected an object, got {meta!r}")
        for key in ("task", "topic"):
            if d.get(key) is not None and not isinstance(d[key], str):
                raise InputError(f"field {key!r}: expected a string or null, got {d[key]!r}")
        if not isinstance(d.get("toxic", False), bool):
            raise InputError(f"field 'toxic': expected true or false, got {d['toxic']!r}")
        words = tuple(text.split(" "))
        if "words" in d and (not isinstance(d["words"], list) or tuple(d["words"]) != words):
            raise InputError("field 'words': does not equal text.split(' ')")
        try:
            return cls(
                text=text,
                kind=d["kind"],
                words=words,
                pos=None if pos is None else tuple(pos),
                task=d.get("task"),
                item_positions=None if items is None else tuple(items),
                topic=d.get("topic"),
                toxic=d.get("toxic", False),
                meta=dict(meta),
            )
        except ValueError as exc:
            raise InputError(str(exc)) from exc


@dataclass(frozen=True)
class EvalPrompt:
    """A prompt cut right before `answer`; the model's target token is `" " + answer`.

    `kind` is "sequence" (continue a run of >= 3 items) or "template" (produce the successor of an
    item named earlier). `heldout_item` is true when the item whose successor is asked was never
    queried by a training template (always true for the out-of-distribution roman numerals).
    """

    prompt: str
    answer: str
    task: str
    kind: str
    heldout_item: bool
    query: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "prompt": self.prompt,
            "answer": self.answer,
            "task": self.task,
            "kind": self.kind,
            "heldout_item": self.heldout_item,
            "query": self.query,
        }


@dataclass(frozen=True)
class GreaterThanPrompt:
    """A greater-than prompt ending with the century token, e.g. "... to the year 17".

    Correct next tokens are the two-digit strings greater than `start_yy` (see `good_answers`).
    """

    prompt: str
    century: int
    start_yy: int

    @property
    def good_answers(self) -> tuple[str, ...]:
        """Two-digit continuations strictly greater than the start year's, e.g. ("33", ..., "99")."""
        return tuple(f"{yy:02d}" for yy in range(self.start_yy + 1, 100))

    @property
    def bad_answers(self) -> tuple[str, ...]:
        """Two-digit continuations less than or equal to the start year's."""
        return tuple(f"{yy:02d}" for yy in range(0, self.start_yy + 1))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {"prompt": self.prompt, "century": self.century, "start_yy": self.start_yy}


def write_jsonl(
    samples: Iterable[Sample], path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write samples as one JSON object per line, atomically; an existing file needs `overwrite`."""
    lines = [json.dumps(s.to_dict(), ensure_ascii=False) for s in samples]
    try:
        return atomic_write_text(path, "".join(line + "\n" for line in lines), overwrite=overwrite)
    except OSError as exc:  # a missing or non-directory parent, no permission, a full disk
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None


def read_jsonl(path: str | os.PathLike[str]) -> list[Sample]:
    """Read samples written by `write_jsonl`; a bad line raises InputError naming `file:line`."""
    samples: list[Sample] = []
    for where, obj in json_lines(path, "expected one sample object"):
        try:
            samples.append(Sample.from_dict(obj))
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from exc
    return samples
