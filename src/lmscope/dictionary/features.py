"""Reading a dictionary's features: where they fire (top-activating contexts) and which tokens drive them.

The de-embedding of feature f is `W_E @ W_enc[:, f]`: the direct path from each token's embedding to the
feature's encoder, ignoring attention and the norm's per-token scale (Dunefsky et al. 2024); with `fold=True` (the
default) the encoder is read through the norm in front of it, its gain folded in as TransformerLens does, so moving a
gain between the norm and the encoder does not change it. It is input-invariant,
so it tells which tokens could drive the feature, while top examples tell where it does fire. Top examples
and densities skip the attention-sink positions (`lmscope.dictionary.positions`), as training does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from lmscope.dictionary.modules import Dictionary
from lmscope.dictionary.positions import PositionRule
from lmscope.dictionary.splice import feature_activations
from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel
from lmscope.model.norms import norm_of_hook, read_through


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


def de_embedding(model: HookedModel, dictionary: Dictionary, feature: int, k: int = 10, *,
                 fold: bool = True) -> list[tuple[str, float]]:
    """The k tokens whose embeddings point most along the feature's encoder direction (read through its input
    norm's gain with `fold`)."""
    if dictionary.cfg.d_in != model.cfg.d_model:
        raise InputError(f"dictionary: d_in {dictionary.cfg.d_in} is not the model's d_model {model.cfg.d_model}")
    W_enc = read_through(norm_of_hook(model, dictionary.cfg.hook_name), dictionary.W_enc[:, feature], fold)
    scores = model.W_E.double() @ W_enc
    top = scores.topk(k)
    return [(model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices, strict=True)]


def feature_reports(model: HookedModel, dictionary: Dictionary, texts: Sequence[str], *,
                    features: Sequence[int] | None = None, n_features: int = 5, k: int = 5,
                    batch_size: int = 32, context: int = 8, exclude_first: int | None = None,
                    progress: Callable[[str, int, int], None] | None = None) -> list[FeatureReport]:
    """Reports for `features` (default: the `n_features` features firing most often on `texts`).

    Densities and top examples count only the positions of the dictionary's `PositionRule` (no padding, no
    BOS position, no leading token the user left out: `exclude_first`, default the dictionary's recorded
    value), so an attention sink is never a feature's top example. One pass over `texts`, keeping a running
    top-k per feature; `progress(stage, i, n)` is called per batch.
    """
    d_sae = dictionary.cfg.d_sae
    bad = [f for f in (features or []) if not 0 <= f < d_sae]
    if bad:
        raise InputError(f"features: {bad[0]} is out of range (the dictionary has {d_sae} features)", arg="features")
    rule = PositionRule.for_dictionary(model, dictionary, exclude_first)
    report = progress or (lambda stage, i, n: None)
    fires = torch.zeros(d_sae, dtype=torch.float64)
    top_v, top_i = torch.empty(0, d_sae), torch.empty(0, d_sae, dtype=torch.long)
    where: list[tuple[int, int]] = []  # kept row -> (text index, position)
    token_ids: list[list[int]] = []
    n_batches = -(-len(texts) // batch_size)
    for j, i in enumerate(range(0, len(texts), batch_size)):
        report("feature activations", j, n_batches)
        batch = model.to_tokens(list(texts[i : i + batch_size]))
        mask = rule.kept(batch)
        zk = feature_activations(model, dictionary, batch, positions=rule)[mask].float().cpu()  # [rows, d_sae]
        rows_b, rows_p = mask.nonzero(as_tuple=True)
        offset = len(where)
        where.extend(zip((rows_b + i).tolist(), rows_p.tolist(), strict=True))
        token_ids.extend(ids[: int(n)].tolist() for ids, n in zip(batch.input_ids.cpu(), batch.lengths, strict=True))
        fires += (zk > 0).sum(0, dtype=torch.float64)
        cand_v = torch.cat([top_v, zk])
        cand_i = torch.cat([top_i, torch.arange(offset, offset + zk.shape[0])[:, None].expand(-1, d_sae)])
        best = cand_v.topk(min(k, cand_v.shape[0]), dim=0)
        top_v, top_i = best.values, cand_i.gather(0, best.indices)
    report("feature activations", n_batches, n_batches)
    if not where:
        raise InputError(f"texts: no token to read features on ({rule.describe()})")
    density = fires / len(where)
    if features is None:
        features = density.topk(min(n_features, d_sae)).indices.tolist()
    special = set(getattr(model.tokenizer, "all_special_ids", None) or [])
    out = []
    for f in features:
        examples = []
        for value, row in zip(top_v[:, f].tolist(), top_i[:, f].tolist(), strict=True):
            if value <= 0:
                break
            t, pos = where[row]
            window = token_ids[t][max(0, pos - context) : pos + 1]
            pieces = [model.tokenizer.decode([tok]) for tok in window[:-1] if tok not in special]
            pieces.append(f"[{model.tokenizer.decode([window[-1]])}]")
            examples.append((float(value), "".join(pieces)))
        out.append(FeatureReport(int(f), float(density[f]), examples, de_embedding(model, dictionary, int(f))))
    return out
