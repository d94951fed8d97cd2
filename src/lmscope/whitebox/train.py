"""Train a CRATE language model of a given size on a text corpus (or lmscope's synthetic corpus).

The recipe is the zoo's: a byte-level BPE tokenizer trained on the corpus, documents packed into one token
stream (each preceded by BOS), AdamW with warm-up and cosine decay on random windows, the last
`heldout_fraction` of the documents held out. The output is a standard HF directory (model, tokenizer,
`zoo_card.json` with the loss curve and held-out loss), loadable by `HookedModel.from_pretrained(dir)`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from lmscope.errors import InputError
from lmscope.model.training import TrainConfig, heldout_loss, pack_tokens, train_causal_lm, unigram_loss

Progress = Callable[[int, int], None]


def read_documents(path: str | os.PathLike[str]) -> list[str]:
    """Non-empty lines of a UTF-8 text file (one document per line); errors name it as the `corpus` argument."""
    source = Path(path)
    if not source.is_file():
        raise InputError(f"corpus: {source}: no such file", arg="corpus")
    try:
        docs = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as err:
        raise InputError(f"corpus: {source}: not valid UTF-8 ({err.reason})", arg="corpus") from None
    if len(docs) < 2:
        raise InputError(f"corpus: {source}: {len(docs)} non-empty line(s); expected at least 2 documents",
                         arg="corpus")
    return docs


def train_crate(out_dir: str | os.PathLike[str], *, corpus: str | os.PathLike[str] | None = None,
                n_samples: int = 120_000, arch: dict[str, Any] | None = None, train: TrainConfig | None = None,
                vocab_size: int = 2048, heldout_fraction: float = 0.05, overwrite: bool = False,
                progress: Progress | None = None) -> Path:
    """Train a CRATE model (`arch`: CrateConfig sizes, default the zoo's crate-tiny) and save it to `out_dir`."""
    from lmscope.data.synthetic import generate_corpus
    from lmscope.data.tokenizer import save_tokenizer, train_tokenizer
    from lmscope.model.crate import build_crate
    from lmscope.model.zoo import SPECS, _save_atomically

    target = Path(out_dir)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise InputError(f"{target}: already exists; pass --overwrite (overwrite=True) to replace it")
    if not 0.0 < heldout_fraction < 1.0:
        raise InputError(f"heldout_fraction: expected a fraction in (0, 1), got {heldout_fraction!r}")
    docs = read_documents(corpus) if corpus is not None else [s.text for s in generate_corpus(n_samples)]
    n_held = max(1, round(heldout_fraction * len(docs)))
    train_docs, held_docs = docs[:-n_held], docs[-n_held:]
    arch = {**SPECS["crate-tiny"].arch, **(arch or {})}
    recipe = train or SPECS["crate-tiny"].train
    tokenizer = train_tokenizer(train_docs, vocab_size=vocab_size, model_max_length=arch["n_positions"])

    def stream(texts: list[str]) -> torch.Tensor:
        return pack_tokens(tokenizer(texts, add_special_tokens=False)["input_ids"], tokenizer.bos_token_id)

    train_stream, held_stream = stream(train_docs), stream(held_docs)
    if min(train_stream.numel(), held_stream.numel()) <= recipe.seq_len + 1:
        raise InputError(f"corpus: too little text for windows of {recipe.seq_len} tokens "
                         f"({train_stream.numel()} training, {held_stream.numel()} held-out tokens)", arg="corpus")
    torch.manual_seed(recipe.seed)
    try:
        model = build_crate(arch, len(tokenizer), tokenizer.bos_token_id)
    except (TypeError, ValueError) as err:
        raise InputError(f"model size: {err}") from None
    log = train_causal_lm(model, train_stream, recipe, progress=progress)
    card = {"name": target.name, "family": "crate", "description": "CRATE trained by `lmscope whitebox train`",
            "n_params": sum(p.numel() for p in model.parameters()), "arch": arch, "train": asdict(recipe),
            "corpus": {"path": str(corpus) if corpus else "synthetic", "documents": len(docs),
                       "train_tokens": int(train_stream.numel()), "heldout_tokens": int(held_stream.numel())},
            "curve": log.to_dict(), "heldout_loss": heldout_loss(model, held_stream, recipe.seq_len),
            "unigram_loss": unigram_loss(train_stream, held_stream, len(tokenizer))}
    _save_atomically(target, model, tokenizer, card, save_tokenizer)
    return target
