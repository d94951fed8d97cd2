"""The user's text for every command that reads text: a file of documents, or the synthetic corpus by name.

`--corpus FILE` is plain text (one document per line) or JSONL (`{"text": ...}` per line); `--corpus synthetic`
is lmscope's own generated corpus, the zoo's training distribution. With no `--corpus`, zoo models default to
the synthetic corpus and any other model is refused with one line asking for text: a real LM finds the synthetic
sentences absurd (~9 nats/token), so dictionaries and effects measured on them would be off-distribution.

Documents longer than the model's context are cut into windows of `max_tokens` tokens that start every `stride`
tokens (the windows overlap by `max_tokens - stride`); the cut is made at the tokenizer's character offsets, so
each window is a substring of the document and is re-tokenized as the model would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmscope.data.lines import json_lines, read_lines
from lmscope.errors import InputError

SYNTHETIC = "synthetic"
"""The `--corpus` value that selects lmscope's synthetic corpus."""

CORPUS_HELP = ("Your text: a plain-text file (one document per line) or JSONL ({\"text\": ...} per line); "
               "'synthetic' for lmscope's synthetic corpus (the default for zoo: models only). Long documents are "
               "cut into context-sized windows.")


@dataclass(frozen=True)
class Corpus:
    """Texts to run, where they came from, and how long documents were windowed."""

    texts: list[str]
    source: str
    """`synthetic` or the file's path."""
    n_documents: int
    max_tokens: int | None = None
    stride: int | None = None

    @property
    def is_synthetic(self) -> bool:
        return self.source == SYNTHETIC

    def describe(self) -> str:
        """One line for summaries and logs."""
        if self.is_synthetic:
            return f"synthetic corpus, {len(self.texts)} texts"
        chunks = "" if len(self.texts) == self.n_documents else (
            f" -> {len(self.texts)} windows of <= {self.max_tokens} tokens, stride {self.stride}")
        return f"{self.source}: {self.n_documents} documents{chunks}"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "n_documents": self.n_documents, "n_texts": len(self.texts),
                "max_tokens": self.max_tokens, "stride": self.stride}


def read_documents(path: str | os.PathLike[str]) -> list[str]:
    """Documents of a corpus file: one per non-blank line; `.jsonl` lines are objects with a string `text`."""
    source = Path(path)
    docs: list[str] = []
    if source.suffix == ".jsonl":
        expected = 'expected one JSON object per line with a string "text"'
        for where, obj in json_lines(source, expected):
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise InputError(f"{where}: {expected}")
            if obj["text"].strip():
                docs.append(obj["text"])
    else:
        docs = [line for line in read_lines(source) if line.strip()]
    if not docs:
        raise InputError(f"{source}: no documents (expected one non-empty document per line)")
    return docs


def window_documents(docs: list[str], tokenizer: Any, max_tokens: int, stride: int | None = None) -> list[str]:
    """Cut each document into substrings of at most `max_tokens` tokens, a new window every `stride` tokens."""
    if max_tokens < 1:
        raise InputError(f"max_tokens: expected a positive number of tokens, got {max_tokens}")
    stride = max_tokens if stride is None else stride
    if not 1 <= stride <= max_tokens:
        raise InputError(f"stride: expected 1..{max_tokens} (the window length), got {stride}")
    texts: list[str] = []
    for doc in docs:
        enc = tokenizer(doc, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) <= max_tokens:
            texts.append(doc)
            continue
        for start in range(0, len(offsets), stride):
            end = min(start + max_tokens, len(offsets))
            piece = doc[offsets[start][0]:offsets[end - 1][1]]
            if piece.strip():
                texts.append(piece)
            if end == len(offsets):
                break
    return texts


def load_corpus(corpus: str | None, *, model_name: str, tokenizer: Any = None, max_tokens: int | None = None,
                stride: int | None = None, synthetic_texts: int = 300, seed: int = 999,
                arg: str = "corpus") -> Corpus:
    """Resolve a `--corpus` value to texts (see the module docstring for the rules and the default); errors
    name `arg`, the argument `corpus` came from (the CLI shows its flag).

    `synthetic_texts` and `seed` pick the synthetic corpus's held-out texts; `max_tokens` (e.g. the model's
    context) windows long documents when a tokenizer is given.
    """
    if corpus is None:
        if not model_name.startswith("zoo:"):
            raise InputError(f"{arg}: {model_name} is not a zoo model, so give it your own text (a file: plain "
                             f"text or JSONL, one document per line), or '{SYNTHETIC}' to use lmscope's synthetic "
                             "corpus anyway", arg=arg)
        corpus = SYNTHETIC
    if corpus == SYNTHETIC:
        from lmscope.data.synthetic import generate_corpus

        texts = [s.text for s in generate_corpus(synthetic_texts, seed=seed, split="heldout")]
        return Corpus(texts, SYNTHETIC, len(texts))
    if not Path(corpus).expanduser().is_file():
        raise InputError(f"{arg}: {corpus}: no such file (expected a text or JSONL file, or '{SYNTHETIC}')", arg=arg)
    docs = read_documents(Path(corpus).expanduser())
    if max_tokens is None or tokenizer is None:
        return Corpus(docs, corpus, len(docs))
    stride = max_tokens if stride is None else stride
    return Corpus(window_documents(docs, tokenizer, max_tokens, stride), corpus, len(docs), max_tokens, stride)
