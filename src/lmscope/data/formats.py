"""Parsers of token-label data: CoNLL-U, NeuroX parallel files, JSONL and the synthetic corpus.

Each parser returns `(sentences, labels)`, two aligned lists of word lists, and raises `InputError`
naming `FILE:LINE` for the first malformed line, so a user can fix the file. `lmscope.data.labels` wraps
these into `LabeledCorpus` objects; this module knows only about bytes, lines and columns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from lmscope.data.lines import json_lines, read_lines
from lmscope.data.samples import Sample, read_jsonl
from lmscope.data.topics import TOXIC_WORDS
from lmscope.errors import InputError

Parsed = tuple[list[list[str]], list[list[str]]]
"""Aligned sentences (lists of words) and labels (one per word)."""

CONLLU_COLUMNS: tuple[str, ...] = (
    "id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc",
)  # fmt: skip
"""The ten CoNLL-U columns in file order; a column can be chosen by name or 0-based index."""

FORMATS: tuple[str, ...] = ("auto", "conllu", "parallel", "jsonl", "synthetic")
"""Values of `read_labels(format=...)`."""

SYNTHETIC_LABELS: tuple[str, ...] = ("pos", "topic", "toxic", "task")
"""Label kinds that can be derived from a synthetic `Sample` (see `parse_synthetic`)."""


def conllu_column_index(column: str | int) -> int:
    """0-based index of a CoNLL-U column given by name ("upos", "xpos", "deprel", ...) or index."""
    if isinstance(column, bool):
        raise InputError(f"column: got {column!r}, expected a column name or an integer index 0-9")
    if isinstance(column, int):
        if not 0 <= column < len(CONLLU_COLUMNS):
            raise InputError(f"column: got {column}, expected an index from 0 to {len(CONLLU_COLUMNS) - 1}")
        return column
    if isinstance(column, str) and column.lower() in CONLLU_COLUMNS:
        return CONLLU_COLUMNS.index(column.lower())
    raise InputError(f"column: got {column!r}, expected one of {', '.join(CONLLU_COLUMNS)} or an index 0-9")


def parse_conllu(path: str | os.PathLike[str], column: str | int = "upos") -> Parsed:
    """Words (FORM) and the chosen column of a CoNLL-U file.

    Comment lines (`#`), multiword-token lines (ID `3-4`) and empty nodes (ID `5.1`) are skipped, so the
    words are the syntactic words UD annotates; blank lines end sentences.
    """
    index = conllu_column_index(column)
    name = CONLLU_COLUMNS[index].upper()
    sentences: list[list[str]] = []
    labels: list[list[str]] = []
    words: list[str] = []
    tags: list[str] = []
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            if words:
                sentences.append(words)
                labels.append(tags)
                words, tags = [], []
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != len(CONLLU_COLUMNS):
            raise InputError(f"{path}:{lineno}: expected 10 tab-separated columns, found {len(fields)}")
        token_id = fields[0]
        if "-" in token_id or "." in token_id:
            continue
        if not token_id.isdecimal():
            raise InputError(
                f"{path}:{lineno}: ID column is {token_id!r}; expected an integer, a range like 3-4 "
                "or a decimal like 5.1"
            )
        if not fields[1]:
            raise InputError(f"{path}:{lineno}: FORM column is empty; expected a word")
        if not fields[index]:
            raise InputError(f"{path}:{lineno}: {name} column is empty; expected a value (or _)")
        words.append(fields[1])
        tags.append(fields[index])
    if words:
        sentences.append(words)
        labels.append(tags)
    return _nonempty((sentences, labels), path, "no sentences (expected tab-separated token lines)")


def _nonempty(parsed: Parsed, path: str | os.PathLike[str], what: str) -> Parsed:
    """`parsed`, or an InputError naming the file when it holds no sentence at all (an empty file would
    otherwise reach a probe or a store as zero rows, far from its cause)."""
    if not parsed[0]:
        raise InputError(f"{path}: {what}")
    return parsed


def parse_parallel(text_path: str | os.PathLike[str], label_path: str | os.PathLike[str]) -> Parsed:
    """NeuroX's parallel files: line i of `text_path` holds a sentence, line i of `label_path` its labels.

    Words and labels are separated by whitespace; every sentence needs at least one word.
    """
    text_lines = read_lines(text_path)
    label_lines = read_lines(label_path)
    if len(text_lines) != len(label_lines):
        raise InputError(
            f"{text_path}, {label_path}: the text file has {len(text_lines)} lines but the label file has "
            f"{len(label_lines)}; expected one label line per sentence"
        )
    sentences: list[list[str]] = []
    labels: list[list[str]] = []
    for lineno, (text_line, label_line) in enumerate(zip(text_lines, label_lines, strict=True), start=1):
        words = text_line.split()
        tags = label_line.split()
        if not words:
            raise InputError(
                f"{text_path}:{lineno}: empty sentence (labels in {label_path}:{lineno}); "
                "expected at least one word"
            )
        if len(words) != len(tags):
            raise InputError(
                f"{text_path}:{lineno} has {len(words)} words but {label_path}:{lineno} has {len(tags)} "
                "labels; expected one label per word"
            )
        sentences.append(words)
        labels.append(tags)
    return _nonempty((sentences, labels), text_path, "no sentences (expected one sentence per line)")


def _string_list(value: object, key: str, where: str) -> list[str]:
    """`value` as a list of non-empty strings, or InputError naming `where` and `key`."""
    if not isinstance(value, list):
        raise InputError(f"{where}: {key!r} is {type(value).__name__}; expected a list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InputError(f"{where}: {key!r} item {i} is {item!r}; expected a string")
        if not item.strip():
            raise InputError(f"{where}: {key!r} item {i} is empty; expected a non-blank string")
    return list(value)


def parse_jsonl_labels(path: str | os.PathLike[str]) -> Parsed:
    """One `{"tokens": [...], "labels": [...]}` object per line (blank lines skipped, other keys ignored)."""
    sentences: list[list[str]] = []
    labels: list[list[str]] = []
    expected = 'expected {"tokens": [...], "labels": [...]}'
    for where, obj in json_lines(path, expected):
        if not isinstance(obj, dict):
            raise InputError(f"{where}: found a JSON {type(obj).__name__}; {expected}")
        for key in ("tokens", "labels"):
            if key not in obj:
                raise InputError(f"{where}: missing key {key!r}; {expected}")
        tokens = _string_list(obj["tokens"], "tokens", where)
        tags = _string_list(obj["labels"], "labels", where)
        if not tokens:
            raise InputError(f"{where}: empty sentence ('tokens' is empty); expected at least one token")
        if len(tokens) != len(tags):
            raise InputError(f"{where}: {len(tokens)} tokens but {len(tags)} labels; expected one label per token")
        sentences.append(tokens)
        labels.append(tags)
    return _nonempty((sentences, labels), path, 'no sentences (expected {"tokens": [...], "labels": [...]} lines)')


def looks_like_synthetic_jsonl(path: str | os.PathLike[str]) -> bool:
    """True when the first non-blank line is a synthetic-corpus `Sample` (has "text" and "kind", no "tokens").

    Only sniffs the start of the file; the chosen parser reports any real problem with file and line.
    """
    try:
        with Path(path).open(encoding="utf-8-sig", errors="replace") as handle:
            for line in handle:
                if line.strip():
                    obj = json.loads(line)
                    return isinstance(obj, dict) and "text" in obj and "kind" in obj and "tokens" not in obj
    except (OSError, ValueError, RecursionError):  # JSONDecodeError is a ValueError; the parser reports it
        return False
    return False


def parse_synthetic(samples: Iterable[Sample], label: str = "pos") -> Parsed:
    """Words and one label kind of synthetic samples (see `lmscope.data.labels.from_synthetic`)."""
    if label not in SYNTHETIC_LABELS:
        raise InputError(f"label: got {label!r}, expected one of {', '.join(SYNTHETIC_LABELS)}")
    toxic = frozenset(TOXIC_WORDS)
    sentences: list[list[str]] = []
    labels: list[list[str]] = []
    for sample in samples:
        words = list(sample.words)
        if label == "pos":
            if sample.pos is None:
                continue
            tags = list(sample.pos)
        elif label == "topic":
            if sample.topic is None:
                continue
            tags = [sample.topic] * len(words)
        elif label == "toxic":
            tags = ["toxic" if word in toxic else "clean" for word in words]
        else:
            items = sample.item_positions or (-1,) * len(words)
            tags = [sample.task if p >= 0 and sample.task else "O" for p in items]
        sentences.append(words)
        labels.append(tags)
    return sentences, labels


def parse_labels(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",
    column: str | int = "upos",
    label_path: str | os.PathLike[str] | None = None,
    synthetic_label: str = "pos",
) -> tuple[Parsed, str]:
    """Parse a token-label file in any format and say where it came from (see `labels.read_labels`)."""
    if format not in FORMATS:
        raise InputError(f"format: got {format!r}, expected one of {', '.join(FORMATS)}")
    source = Path(path)
    if format == "auto":
        suffix = source.suffix.lower()
        if suffix == ".conllu":
            format = "conllu"
        elif suffix == ".jsonl":
            format = "synthetic" if looks_like_synthetic_jsonl(source) else "jsonl"
        else:
            format = "parallel"
    if format == "conllu":
        return parse_conllu(source, column), str(source)
    if format == "jsonl":
        return parse_jsonl_labels(source), str(source)
    if format == "synthetic":
        parsed = _nonempty(parse_synthetic(read_jsonl(source), synthetic_label), source,
                           f"no samples with {synthetic_label!r} labels")
        return parsed, f"{source}:{synthetic_label}"
    if label_path is None:
        raise InputError(
            f"{source}: a parallel text file needs its label file (label_path); "
            "use .conllu or .jsonl for single-file formats"
        )
    return parse_parallel(source, label_path), str(source)
