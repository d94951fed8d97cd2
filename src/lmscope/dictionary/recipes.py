"""Training a dictionary on a model in one call: default hook points per kind and the on-the-fly data path.

Used by `lmscope dict train` and the demo; the estimators (`SAE`, `Transcoder`) stay the general API.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lmscope.dictionary.buffer import ActivationBuffer
from lmscope.dictionary.estimators import SAE, Transcoder
from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel

KINDS = ("sae", "transcoder")


def dictionary_hooks(model: HookedModel, kind: str, layer: int, hook: str | None = None) -> tuple[str, str]:
    """(input hook, target hook): a transcoder maps `ln2.hook_normalized` to `hook_mlp_out` of `layer`;
    an SAE reconstructs `hook` (default `blocks.{layer}.hook_resid_post`)."""
    if kind not in KINDS:
        raise InputError(f"--kind: expected sae or transcoder, got {kind!r}")
    if not 0 <= layer < model.cfg.n_layers:
        raise InputError(f"--layer: expected 0..{model.cfg.n_layers - 1}, got {layer}")
    if kind == "transcoder":
        if hook is not None:
            raise InputError("--hook: a transcoder always reads ln2.hook_normalized and writes hook_mlp_out")
        pair = (f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out")
    else:
        name = hook or f"blocks.{layer}.hook_resid_post"
        pair = (name, name)
    model.check_names(list(pair))
    return pair


def corpus_texts(n: int, seed: int = 0) -> list[str]:
    """Texts of lmscope's synthetic corpus (the zoo's training distribution, a held-out seed)."""
    from lmscope.data.synthetic import generate_corpus

    return [s.text for s in generate_corpus(n, seed=seed, split="heldout")]


def train_dictionary(model: HookedModel, *, kind: str = "transcoder", layer: int = 1, hook: str | None = None,
                     d_sae: int = 1024, activation: str = "relu", l1_coefficient: float = 1.0,
                     k: int | None = None, tokens: int = 200_000, batch_size: int = 1024, lr: float = 2e-3,
                     texts: Sequence[str] | None = None, seed: int = 0, out_dir: str | Path | None = None,
                     checkpoint_every: int = 0, resume: bool = False,
                     progress: Callable[[int, int, dict[str, Any]], None] | None = None) -> SAE | Transcoder:
    """Train an SAE or transcoder on activations streamed from `model` over `texts` (default: the corpus)."""
    hook_in, hook_out = dictionary_hooks(model, kind, layer, hook)
    if activation == "topk" and k is None:
        raise InputError("--k: a TopK dictionary needs k")
    n_steps = max(1, math.ceil(tokens / batch_size))
    texts = list(texts) if texts is not None else corpus_texts(max(200, tokens // 10), seed=seed + 100)
    estimator_cls = Transcoder if kind == "transcoder" else SAE
    est = estimator_cls(d_sae=d_sae, activation=activation, l1_coefficient=l1_coefficient, k=k, lr=lr,
                        batch_size=batch_size, n_steps=n_steps, warmup_steps=min(50, n_steps // 10),
                        l1_warmup_steps=n_steps // 5, dead_after=max(batch_size * 50, tokens // 4), seed=seed,
                        checkpoint_every=checkpoint_every, out_dir=out_dir, resume=resume, hook_name=hook_in,
                        hook_name_out=hook_out, model_id=model.name)
    names = [hook_in] if hook_in == hook_out else [hook_in, hook_out]
    buffer = ActivationBuffer(model, texts, names, buffer_tokens=max(8 * batch_size, 16384), seed=seed)
    return est.fit(buffer, progress=progress)
