"""A transcoder for every MLP of a model: train once, cache under `lmscope.model.zoo.home()`, load by layer.

Circuits read a model through one transcoder per layer. `transcoder_stack(model)` returns
`{layer: Dictionary}`, loading them from `<home>/transcoders/<model>-<weights hash>-<settings>/layer<L>/`
when they were trained before for exactly these weights and settings, training the missing ones
otherwise. `save_transcoders` / `load_transcoders` read and write such a directory (SAELens layout per layer).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from lmscope.data.corpus import SYNTHETIC, Corpus
from lmscope.dictionary.io import CFG_FILE, load_dictionary, save_dictionary
from lmscope.dictionary.modules import Dictionary
from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel

_LAYER = re.compile(r"^blocks\.(\d+)\.ln2\.hook_normalized$")


def load_transcoders(directory: str | Path, *, model: HookedModel | None = None,
                     allow_mismatch: bool = False) -> dict[int, Dictionary]:
    """`{layer: transcoder}` from `directory` (one transcoder) or its subdirectories (one per layer); with
    `model`, each one's recorded model is checked against it (`load_dictionary`'s provenance check)."""
    return {layer: tc for layer, (_, tc) in _load(directory, model, allow_mismatch).items()}


def load_transcoders_by_path(directory: str | Path, *, model: HookedModel | None = None,
                             allow_mismatch: bool = False) -> tuple[dict[int, Dictionary], dict[int, str]]:
    """`load_transcoders`, and each layer's transcoder directory: the name `attach_dictionaries` attaches it under
    (`dict:<directory>:f`), which `trace_circuit(dictionaries=...)` gives the graph's feature nodes."""
    loaded = _load(directory, model, allow_mismatch)
    return {layer: tc for layer, (_, tc) in loaded.items()}, {layer: str(d) for layer, (d, _) in loaded.items()}


def _load(directory: str | Path, model: HookedModel | None, allow_mismatch: bool
          ) -> dict[int, tuple[Path, Dictionary]]:
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"directory: {root} is not a directory", arg="directory")
    dirs = [root] if (root / CFG_FILE).exists() else sorted(p for p in root.iterdir() if (p / CFG_FILE).exists())
    if not dirs:
        raise InputError(f"directory: {root} holds no {CFG_FILE} (expected one transcoder directory per layer)",
                         arg="directory")
    out: dict[int, tuple[Path, Dictionary]] = {}
    for d in dirs:
        tc = load_dictionary(d, model=model, allow_mismatch=allow_mismatch)
        m = _LAYER.match(tc.cfg.hook_name)
        if tc.cfg.kind != "transcoder" or m is None:
            raise InputError(f"{d}: not an MLP transcoder (kind {tc.cfg.kind!r}, hook {tc.cfg.hook_name!r})")
        layer = int(m.group(1))
        if layer in out:
            raise InputError(f"{d}: a second transcoder for layer {layer}")
        out[layer] = (d, tc)
    return out


def save_transcoders(transcoders: Mapping[int, Dictionary], directory: str | Path, *,
                     overwrite: bool = False) -> Path:
    """Write each transcoder to `directory/layer<L>/`."""
    for layer, tc in transcoders.items():
        save_dictionary(tc, Path(directory) / f"layer{layer}", overwrite=overwrite)
    return Path(directory)


def stack_dir(model: HookedModel, settings: Mapping[str, object]) -> Path:
    """Where `transcoder_stack` caches the transcoders of `model` trained with `settings`."""
    from lmscope.activations.extract import weights_sha256
    from lmscope.model.zoo import home

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.name).strip("_") or "model"
    tag = hashlib.sha256(json.dumps(dict(settings), sort_keys=True).encode()).hexdigest()[:8]
    return home() / "transcoders" / f"{name}-{weights_sha256(model)[:16]}-{tag}"


def transcoder_stack(model: HookedModel, *, layers: list[int] | None = None, d_sae: int = 1024,
                     tokens: int = 200_000, l1_coefficient: float = 1.0, seed: int = 0, cache: bool = True,
                     corpus: Corpus | str = SYNTHETIC,
                     progress: Callable[[str, int, int], None] | None = None) -> dict[int, Dictionary]:
    """A transcoder for each of `layers` (default: all), from the cache or trained (and then cached).

    The layers not in the cache are trained together, from one model forward per batch
    (`lmscope.dictionary.multi.train_stack`).

    `corpus`: the training text (`lmscope.dictionary.recipes.train_dictionary`); the default, the synthetic
    corpus, suits the zoo models only: pass the user's corpus (a file or a `Corpus`) for a real model. A
    corpus other than the synthetic one is part of the cache key (by the hash of its texts).
    """
    from lmscope.dictionary import multi
    from lmscope.dictionary.recipes import model_corpus, texts_sha256

    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    settings: dict[str, object] = {"d_sae": d_sae, "tokens": tokens, "l1_coefficient": l1_coefficient, "seed": seed,
                                   "trainer": "one-pass"}
    if not isinstance(corpus, Corpus):
        corpus = model_corpus(corpus, model, synthetic_texts=max(200, tokens // 10), seed=seed + 100)
    if not corpus.is_synthetic:
        settings["corpus"] = texts_sha256(corpus.texts)
    where = stack_dir(model, settings)
    out: dict[int, Dictionary] = {}
    for layer in layers:
        path = where / f"layer{layer}"
        if cache and (path / CFG_FILE).exists():
            out[layer] = load_dictionary(path)
    missing = [la for la in layers if la not in out]
    if missing:  # every missing layer from one model forward per batch
        stage = (lambda s, i, n: progress("training transcoders", i, n)) if progress is not None else None
        run = multi.train_stack(model, layers=missing, kind="transcoder", d_sae=d_sae, tokens=tokens,
                                l1_coefficient=l1_coefficient, seed=seed, corpus=corpus, progress=stage)
        for layer, d in run.dictionaries.items():
            out[layer] = d
            if cache:
                save_dictionary(d, where / f"layer{layer}", overwrite=True)
    if progress is not None:
        progress("training transcoders", len(layers), len(layers))
    return {la: out[la] for la in layers}
