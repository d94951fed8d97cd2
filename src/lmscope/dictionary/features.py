"""Reading a dictionary's features: where they fire (top-activating contexts) and which tokens drive them.

The de-embedding of feature f is `W_E @ W_enc[:, f]`: the direct path from each token's embedding to the
feature's encoder, ignoring attention and LayerNorm scale (Dunefsky et al. 2024). It is input-invariant,
so it tells which tokens could drive the feature, while top examples tell where it does fire.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from lmscope.dictionary.modules import Dictionary
from lmscope.dictionary.splice import feature_activations
from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel


@dataclass(frozen=True)
class FeatureReport:
    """One feature: how often it fires, its top contexts (`(activation, text with the token in [brackets])`)
    and its top de-embedding tokens."""

    feature: int
    density: float
    top_examples: list[tuple[float, str]]
    de_embedding: list[tuple[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def de_embedding(model: HookedModel, dictionary: Dictionary, feature: int, k: int = 10) -> list[tuple[str, float]]:
    """The k tokens whose embeddings point most along the feature's encoder direction."""
    if dictionary.cfg.d_in != model.cfg.d_model:
        raise InputError(f"dictionary: d_in {dictionary.cfg.d_in} is not the model's d_model {model.cfg.d_model}")
    scores = model.W_E.float() @ dictionary.W_enc[:, feature].detach().float()
    top = scores.topk(k)
    return [(model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices, strict=True)]


def feature_reports(model: HookedModel, dictionary: Dictionary, texts: Sequence[str], *,
                    features: Sequence[int] | None = None, n_features: int = 5, k: int = 5,
                    batch_size: int = 32, context: int = 8) -> list[FeatureReport]:
    """Reports for `features` (default: the `n_features` features firing most often on `texts`)."""
    acts, rows = [], []
    for i in range(0, len(texts), batch_size):
        chunk = list(texts[i : i + batch_size])
        z = feature_activations(model, dictionary, chunk)  # [b, pos, d_sae], padding zeroed
        acts.append(z.reshape(-1, z.shape[-1]))
        ids = model.to_tokens(chunk).input_ids
        rows.extend((i + b, p, ids[b]) for b in range(z.shape[0]) for p in range(z.shape[1]))
    z = torch.cat(acts)
    density = (z > 0).float().mean(0)
    if features is None:
        features = density.topk(min(n_features, z.shape[1])).indices.tolist()
    bad = [f for f in features if not 0 <= f < z.shape[1]]
    if bad:
        raise InputError(f"--features: {bad[0]} is out of range (the dictionary has {z.shape[1]} features)")
    out = []
    for f in features:
        top = z[:, f].topk(min(k, z.shape[0]))
        examples = []
        for value, row in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            if value <= 0:
                break
            _, pos, ids = rows[row]
            window = ids[max(0, pos - context) : pos + 1].tolist()
            pieces = [model.tokenizer.decode([t]) for t in window]
            pieces[-1] = f"[{pieces[-1]}]"
            examples.append((float(value), "".join(pieces).replace("<|endoftext|>", "")))
        out.append(FeatureReport(int(f), float(density[f]), examples, de_embedding(model, dictionary, int(f))))
    return out
