"""Writing lmscope's synthetic corpus to files a user can inspect and feed back to any command.

`export_synthetic(out_dir)` writes three views of the same samples:

- `corpus.txt`: one text per line, the format of `--corpus FILE` (and of `lmscope extract`'s plain text);
- `labels.conllu`: one CoNLL-U sentence per sample, the UPOS tag of every word in column 4 and what else the
  generator knows in the comments (`# kind`, `# task`, `# topic`, `# toxic`) and the MISC column
  (`Item=N` for a word that is item N of the sample's succession task, `Toxic=Yes` for a toxic word);
- `samples.jsonl`: the full `Sample` records (`lmscope.data.samples.write_jsonl`), the "synthetic corpus JSONL"
  that `--labels` reads with every label kind (pos, task, topic, toxic).

The defaults (300 held-out samples, seed 999) are exactly the texts `--corpus synthetic` uses. Every file is
written atomically, and nothing is written unless all three can be (an existing file needs `overwrite`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lmscope.data.samples import Sample, write_jsonl
from lmscope.data.topics import TOXIC_WORDS
from lmscope.errors import InputError, bad_argument
from lmscope.fileio import atomic_write_text, check_writable

FILES: tuple[str, ...] = ("corpus.txt", "labels.conllu", "samples.jsonl")
"""The files `export_synthetic` writes, in order."""

DEFAULT_SAMPLES = 300
DEFAULT_SEED = 999
DEFAULT_SPLIT = "heldout"
"""The defaults of `lmscope.data.corpus.load_corpus` for `--corpus synthetic`, so the default export is that corpus."""


def conllu_text(samples: Sequence[Sample]) -> str:
    """The samples as CoNLL-U: UPOS per word, item index and toxicity in MISC, sample facts in comments."""
    toxic = frozenset(TOXIC_WORDS)
    blocks = []
    for i, s in enumerate(samples):
        lines = [f"# sent_id = {i + 1}", f"# text = {s.text}", f"# kind = {s.kind}"]
        lines += [f"# {key} = {value}" for key, value in (("task", s.task), ("topic", s.topic)) if value is not None]
        if s.kind == "topic":
            lines.append(f"# toxic = {'yes' if s.toxic else 'no'}")
        items = s.item_positions or (-1,) * len(s.words)
        for j, word in enumerate(s.words):
            misc = [f"Item={items[j]}"] if items[j] >= 0 else []
            misc += ["Toxic=Yes"] if word in toxic else []
            upos = s.pos[j] if s.pos is not None else "_"
            lines.append("\t".join([str(j + 1), word, "_", upos, "_", "_", "_", "_", "_", "|".join(misc) or "_"]))
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def export_synthetic(out_dir: str | os.PathLike[str], *, n_samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED,
                     split: str = DEFAULT_SPLIT, overwrite: bool = False) -> dict[str, Path]:
    """Write `corpus.txt`, `labels.conllu` and `samples.jsonl` for `generate_corpus(n_samples, seed, split)`.

    Returns `{file name: path}`. Refuses (InputError) before writing anything when a file exists and
    `overwrite` is false, or when `n_samples < 1`.
    """
    from lmscope.data.synthetic import generate_corpus

    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise bad_argument("n_samples", "a positive number of samples", n_samples)
    if split not in ("train", "heldout"):
        raise bad_argument("split", "train or heldout", split)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"out_dir: {out} is a file, expected a directory", arg="out_dir")
    paths = {name: check_writable(out / name, overwrite=overwrite) for name in FILES}
    samples = generate_corpus(n_samples, seed=seed, split=split)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths["corpus.txt"], "".join(s.text + "\n" for s in samples), overwrite=overwrite)
    atomic_write_text(paths["labels.conllu"], conllu_text(samples), overwrite=overwrite)
    write_jsonl(samples, paths["samples.jsonl"], overwrite=overwrite)
    return paths
