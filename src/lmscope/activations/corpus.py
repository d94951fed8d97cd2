"""Reading the sentences to extract from: plain text (one sentence per line), CoNLL-U or JSONL."""

from __future__ import annotations

from pathlib import Path

from lmscope.errors import InputError
from lmscope.fileio import file_sha256

__all__ = ["file_sha256", "read_sentences"]


def read_sentences(path: str | Path) -> list[list[str]]:
    """Words of each sentence of a corpus file.

    `.conllu` and `.jsonl` files are read with the token-label readers (their words); any other file is
    plain text, one sentence per line, words separated by whitespace. An empty line, a missing file or
    bad UTF-8 is an InputError naming the file and line.
    """
    source = Path(path)
    if source.suffix in (".conllu", ".jsonl"):
        from lmscope.data.labels import read_labels

        return [list(s) for s in read_labels(source).sentences]
    if not source.is_file():
        raise InputError(f"{source}: no such file")
    sentences = []
    with open(source, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"{source}:{lineno}: not valid UTF-8 ({err.reason})") from None
            words = line.split()
            if not words:
                raise InputError(f"{source}:{lineno}: empty sentence; expected one sentence per line")
            sentences.append(words)
    if not sentences:
        raise InputError(f"{source}: no sentences")
    return sentences
