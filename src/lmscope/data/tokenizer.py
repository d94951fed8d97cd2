"""A small GPT-2-style byte-level BPE tokenizer for the synthetic corpus.

The analyses need token-level ground truth that matches GPT-2's: every succession item and toxic
word is one token with and without its leading space (" Monday", "Monday"), and a four-digit year
splits into the century with its space and a two-digit token (" 1732" -> " 17", "32"), so the
greater-than target after "to the year 17" is one two-digit token. Training is deterministic and
takes well under a second on the corpus sizes the model zoo uses.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lmscope.data.samples import Sample
from lmscope.data.sequences import ALL_TASKS
from lmscope.data.topics import TOXIC_WORDS
from lmscope.errors import InputError

EOS_TOKEN = "<|endoftext|>"
"""The one special token: beginning, end, padding and unknown, as in GPT-2."""

DEFAULT_VOCAB_SIZE = 2048
"""Upper bound given to the BPE trainer; on the synthetic corpus merges run out near 1,820 tokens."""

DEFAULT_MODEL_MAX_LENGTH = 1024

YEAR_SPLIT_PATTERN = r"(?<!\d) ?\d\d(?=\d\d(?!\d))"
"""Isolates the first two digits (with an optional leading space) of a number of exactly four digits."""

REQUIRED_REPEATS = 8
"""Copies of the required strings added to the training stream, so their merges exist even if rare."""


def required_single_tokens() -> list[str]:
    """Strings that must be one token both bare and with a leading space: task items and toxic words."""
    words = {w for items in ALL_TASKS.values() for w in items} | set(TOXIC_WORDS)
    return sorted(words)


def year_tokens() -> list[str]:
    """Two-digit year parts "00".."99": one token each (bare; they follow the century token)."""
    return [f"{yy:02d}" for yy in range(100)]


def build_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Year split, then GPT-2's byte-level regex split (no prefix space)."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(YEAR_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


def _texts(samples_or_texts: Iterable[Sample | str]) -> Iterable[str]:
    for i, item in enumerate(samples_or_texts):
        if isinstance(item, Sample):
            yield item.text
        elif isinstance(item, str):
            yield item
        else:
            raise InputError(f"samples_or_texts[{i}]: expected a Sample or a str, got {type(item).__name__}")


def _required_block() -> str:
    """Each required string once with a leading space and once bare (after a newline)."""
    req = required_single_tokens()
    return "".join(" " + w for w in req) + "\n" + "\n".join(req + year_tokens())


def check_tokenizer(tokenizer: PreTrainedTokenizerFast | Tokenizer) -> list[str]:
    """Problems with the single-token and year-split properties (empty list: all good)."""
    backend = tokenizer if isinstance(tokenizer, Tokenizer) else tokenizer.backend_tokenizer
    problems = []
    for word in required_single_tokens():
        for s in (word, " " + word):
            toks = backend.encode(s, add_special_tokens=False).tokens
            if len(toks) != 1:
                problems.append(f"{s!r} -> {len(toks)} tokens")
    for s in year_tokens():
        if len(backend.encode(s, add_special_tokens=False).ids) != 1:
            problems.append(f"{s!r} -> not one token")
    ids = backend.encode(" 1732", add_special_tokens=False).ids
    if [backend.decode([i]) for i in ids] != [" 17", "32"]:
        problems.append(f"' 1732' -> {[backend.decode([i]) for i in ids]}, expected [' 17', '32']")
    return problems


def train_tokenizer(
    samples_or_texts: Iterable[Sample | str],
    *,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
) -> PreTrainedTokenizerFast:
    """Train a deterministic byte-level BPE tokenizer on samples (or texts) and check its properties.

    Raises InputError naming `vocab_size` if it is too small for every task item to be one token.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 300:
        raise InputError(f"vocab_size: got {vocab_size!r}, expected an integer >= 300")
    if isinstance(model_max_length, bool) or not isinstance(model_max_length, int) or model_max_length < 1:
        raise InputError(f"model_max_length: got {model_max_length!r}, expected a positive integer")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = build_pre_tokenizer()
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = list(_texts(samples_or_texts)) + [_required_block()] * REQUIRED_REPEATS
    backend.train_from_iterator(texts, trainer=trainer, length=len(texts))
    problems = check_tokenizer(backend)
    if problems:
        raise InputError(
            f"vocab_size: {vocab_size} is too small for the synthetic tasks ({len(problems)} problems, "
            f"e.g. {'; '.join(problems[:3])}); expected a larger vocab_size such as {DEFAULT_VOCAB_SIZE}"
        )
    return wrap_tokenizer(backend, model_max_length=model_max_length)


def wrap_tokenizer(backend: Tokenizer, *, model_max_length: int = DEFAULT_MODEL_MAX_LENGTH) -> PreTrainedTokenizerFast:
    """A transformers tokenizer around `backend`, with `<|endoftext|>` as bos/eos/pad/unk."""
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=model_max_length,
    )


def save_tokenizer(
    tokenizer: PreTrainedTokenizerFast, directory: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write `tokenizer.json` and `tokenizer_config.json` into `directory` (AutoTokenizer can load it).

    Files are written to a temporary directory and renamed into place; an existing tokenizer in
    `directory` is only replaced with `overwrite=True`.
    """
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise InputError(f"{target}: is a file, expected a directory for the tokenizer")
    if (target / "tokenizer.json").exists() and not overwrite:
        raise InputError(f"{target / 'tokenizer.json'}: already exists; pass overwrite=True to replace it")
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tokenizer.", dir=target) as tmp:
        tokenizer.save_pretrained(tmp)
        config_path = Path(tmp) / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        # the generic class name also loads in transformers 4 (v5 writes its own "TokenizersBackend")
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        for name in sorted(os.listdir(tmp)):
            os.replace(Path(tmp) / name, target / name)
    return target


def load_tokenizer(directory: str | os.PathLike[str]) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by `save_tokenizer` (or any HF tokenizer directory)."""
    path = Path(directory)
    if not (path / "tokenizer.json").is_file():
        raise InputError(f"{path}: no tokenizer.json found; expected a directory written by save_tokenizer")
    tok: Any = AutoTokenizer.from_pretrained(str(path))
    return tok


def _offsets(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    if isinstance(tokenizer, Tokenizer):
        return list(tokenizer.encode(text, add_special_tokens=False).offsets)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [tuple(o) for o in enc["offset_mapping"]]


def word_token_spans(tokenizer: Any, words: Sequence[str]) -> list[tuple[int, int]]:
    """Each word's token span `[start, end)` in the encoding of `" ".join(words)` (no special tokens).

    Works from character offsets: a leading space belongs to the word after it (also when it is a
    token of its own), so the spans are contiguous and cover every token; a word split into several
    tokens ("1732" -> " 17", "32") gets a span of several tokens.
    """
    for i, w in enumerate(words):
        if not w or " " in w:
            raise InputError(f"words[{i}]: {w!r}; expected a non-empty word without spaces")
    bounds = []
    pos = 0
    for w in words:
        bounds.append((pos, pos + len(w)))
        pos += len(w) + 1
    offsets = _offsets(tokenizer, " ".join(words))
    spans: list[list[int]] = [[-1, -1] for _ in words]
    wi = 0
    for ti, (s, _e) in enumerate(offsets):
        while wi < len(words) - 1 and s >= bounds[wi][1]:
            wi += 1
        # a token made only of the separating space (" x" -> " ", "x") joins the word after it
        if spans[wi][0] < 0:
            spans[wi][0] = ti
        spans[wi][1] = ti + 1
    if any(s < 0 for s, _ in spans):
        raise InputError("words: some word got no token; the tokenizer dropped characters")
    return [(s, e) for s, e in spans]


def token_word_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """For each token of `" ".join(words)`, the index of the word it belongs to."""
    spans = word_token_spans(tokenizer, words)
    ids = [-1] * (spans[-1][1] if spans else 0)
    for wi, (s, e) in enumerate(spans):
        for t in range(s, e):
            ids[t] = wi
    return ids
