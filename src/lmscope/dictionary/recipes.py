"""Training a dictionary on a model in one call: default hook points per kind and the on-the-fly data path.

Used by `lmscope dict train` and the demo; the estimators (`SAE`, `Transcoder`) stay the general API. Text
comes from `lmscope.data.corpus` (the user's file, or the synthetic corpus only for zoo models), windowed to
the model's context, and is recorded with the dictionary (`corpus_record`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lmscope.data.corpus import SYNTHETIC, Corpus, load_corpus
from lmscope.dictionary.estimators import SAE, Transcoder
from lmscope.dictionary.train import RunConfig
from lmscope.errors import InputError, bad_argument
from lmscope.model.hooked import HookedModel

KINDS = ("sae", "transcoder")


def dictionary_hooks(model: HookedModel, kind: str, layer: int, hook: str | None = None) -> tuple[str, str]:
    """(input hook, target hook): a transcoder maps `ln2.hook_normalized` to `hook_mlp_out` of `layer`;
    an SAE reconstructs `hook` (default `blocks.{layer}.hook_resid_post`)."""
    if kind not in KINDS:
        raise bad_argument("kind", "sae or transcoder", kind)
    if not 0 <= layer < model.cfg.n_layers:
        raise bad_argument("layer", f"0..{model.cfg.n_layers - 1}", layer)
    if kind == "transcoder":
        if hook is not None:
            raise InputError("hook: a transcoder always reads ln2.hook_normalized and writes hook_mlp_out", arg="hook")
        pair = (f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out")
    else:
        name = hook or f"blocks.{layer}.hook_resid_post"
        pair = (name, name)
    model.check_names(list(pair))
    return pair


def corpus_texts(n: int, seed: int = 0) -> list[str]:
    """`n` texts of lmscope's synthetic corpus (the zoo's training distribution, a held-out seed), through
    `lmscope.data.corpus.load_corpus`."""
    return load_corpus(SYNTHETIC, model_name="zoo:", synthetic_texts=n, seed=seed).texts


def model_corpus(corpus: str | None, model: HookedModel, *, synthetic_texts: int = 300, seed: int = 999,
                 arg: str = "corpus") -> Corpus:
    """`load_corpus` for `model`: documents cut into windows of the model's context (less one position where
    it prepends a BOS), a new window every context length (no overlap; the stride is in `Corpus.describe`).
    `corpus=None` is the synthetic corpus for zoo models and an InputError for any other (naming `arg`)."""
    window = max(1, model.cfg.n_ctx - int(model.prepend_bos))
    return load_corpus(corpus, model_name=model.name, tokenizer=model.tokenizer, max_tokens=window, stride=window,
                       synthetic_texts=synthetic_texts, seed=seed, arg=arg)


def texts_sha256(texts: Sequence[str]) -> str:
    """A hash of the exact texts (order included) a dictionary saw."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def corpus_record(corpus: Corpus, model: HookedModel | None = None, exclude_first: int = 0) -> dict[str, Any]:
    """What cfg.json and result.json record about a corpus: `Corpus.to_dict()` plus the file's `sha256`,
    the texts' `texts_sha256`, and with `model` the number of `tokens` at kept positions (BOS and the first
    `exclude_first` text tokens left out)."""
    rec: dict[str, Any] = {**corpus.to_dict(), "texts_sha256": texts_sha256(corpus.texts)}
    if not corpus.is_synthetic and Path(corpus.source).expanduser().is_file():
        rec["sha256"] = file_sha256(Path(corpus.source).expanduser())
    if model is not None and model.tokenizer is not None:
        ids = model.tokenizer(list(corpus.texts), add_special_tokens=False)["input_ids"]
        rec["tokens"] = int(sum(max(0, len(r) - exclude_first) for r in ids))
    return rec


def recipe_estimator(model: HookedModel, kind: str, hook_in: str, hook_out: str, *, d_sae: int, activation: str,
                     l1_coefficient: float, k: int | None, tokens: int, batch_size: int, lr: float,
                     seed: int) -> SAE | Transcoder:
    """The untrained estimator `train_dictionary` and stack training (`lmscope.dictionary.multi`) fit: steps
    `ceil(tokens / batch_size)`, LR warm-up over min(50, steps/10) steps, L1 warm-up over a fifth of them,
    a latent dead after `max(50 batches, tokens / 4)` rows without firing."""
    if activation == "topk" and k is None:
        raise InputError("k: a TopK dictionary needs k", arg="k")
    n_steps = max(1, math.ceil(tokens / batch_size))
    params: dict[str, Any] = dict(
        d_sae=d_sae, activation=activation, l1_coefficient=l1_coefficient, k=k, lr=lr, batch_size=batch_size,
        n_steps=n_steps, warmup_steps=min(50, n_steps // 10), l1_warmup_steps=n_steps // 5,
        dead_after=max(batch_size * 50, tokens // 4), seed=seed, hook_name=hook_in, model_id=model.name)
    if kind == "transcoder":
        return Transcoder(**params, hook_name_out=hook_out)
    return SAE(**params)


def training_texts(model: HookedModel, texts: Sequence[str] | None, corpus: Any, *, tokens: int, seed: int,
                   exclude_first: int, reuse: int) -> tuple[list[str], dict[str, Any]]:
    """The texts a dictionary trains on and the corpus record for its cfg.json: `texts` as given, else `corpus`
    (a `Corpus`, a `load_corpus` value, or None: the synthetic default for zoo models)."""
    if texts is not None:
        record: dict[str, Any] = {"source": "texts", "n_texts": len(texts), "texts_sha256": texts_sha256(texts)}
    else:
        if not isinstance(corpus, Corpus):
            corpus = model_corpus(corpus, model, synthetic_texts=max(200, tokens // 10), seed=seed + 100)
        texts, record = corpus.texts, corpus_record(corpus, model, exclude_first)
    dtype = next(model.hf.parameters()).dtype
    return list(texts), {**record, "reuse": reuse, "model_dtype": str(dtype).removeprefix("torch.")}


def train_dictionary(model: HookedModel, *, kind: str = "transcoder", layer: int = 1, hook: str | None = None,
                     d_sae: int = 1024, activation: str = "relu", l1_coefficient: float = 1.0,
                     k: int | None = None, tokens: int = 200_000, batch_size: int = 1024, lr: float = 2e-3,
                     texts: Sequence[str] | None = None, corpus: Corpus | str | None = None,
                     exclude_first: int = 0, reuse: int = 1, seed: int = 0, run: RunConfig | None = None,
                     provenance: dict[str, Any] | None = None,
                     progress: Callable[[str, int, int], None] | None = None) -> SAE | Transcoder:
    """Train an SAE or transcoder on activations streamed from `model`: a one-layer stack
    (`lmscope.dictionary.multi.train_stack`), so its data order is a function of (texts, seed, step) and a
    run stopped at a checkpoint resumes to the bytes an uninterrupted run gives.

    The text: `texts` as given, or `corpus` (a `Corpus`, a file, or `"synthetic"`; None: the synthetic
    corpus for zoo models, an InputError asking for text for any other, see `lmscope.data.corpus`). The
    BOS position and the first `exclude_first` text tokens of every text are left out
    (`lmscope.dictionary.positions`); the position rule and the corpus (`corpus_record`) go into cfg.json.
    `reuse`: each row computed from the model is served `reuse` times, so `tokens` training rows cost
    `tokens / reuse` tokens of forward passes. `run`: checkpoints and resume (`RunConfig`), `progress(stage,
    i, n)` per step and `provenance` (the model record cfg.json keeps) as in `train_stack`.
    """
    from lmscope.dictionary.multi import train_stack

    dictionary_hooks(model, kind, layer, hook)  # refuses a bad kind, layer or hook before any work
    trained = train_stack(model, layers=[layer], kind=kind, hook=hook, d_sae=d_sae, activation=activation,
                          l1_coefficient=l1_coefficient, k=k, tokens=tokens, batch_size=batch_size, lr=lr,
                          texts=texts, corpus=corpus, exclude_first=exclude_first, reuse=reuse, seed=seed,
                          buffer_tokens=max(8 * batch_size, 16384), run=run, provenance=provenance,
                          progress=progress)
    est: SAE | Transcoder = trained.estimators[layer]
    return est
