"""All of a dictionary's metrics on held-out text: reconstruction (L0, FVU, dead/dense) and spliced LM loss."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from lmscope.dictionary.metrics import evaluate
from lmscope.dictionary.modules import Dictionary
from lmscope.dictionary.positions import PositionRule
from lmscope.dictionary.splice import spliced_metrics
from lmscope.model.hooked import HookedModel


def dictionary_metrics(model: HookedModel, dictionary: Dictionary, texts: Sequence[str], *,
                       exclude_first: int | None = None, batch_size: int = 32,
                       progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """`{"metrics": ..., "spliced": ..., "positions": ...}` on `texts`, JSON-safe.

    Rows and losses are taken at the positions of the dictionary's `PositionRule` (no padding, no BOS
    position; `exclude_first` further leading tokens, default the dictionary's recorded value), the same
    positions it was trained on. `progress(stage, i, n)` is called per batch.
    """
    cfg = dictionary.cfg
    rule = PositionRule.for_dictionary(model, dictionary, exclude_first)
    report = progress or (lambda stage, i, n: None)
    names = [cfg.hook_name] if cfg.hook_name == cfg.hook_name_out else [cfg.hook_name, cfg.hook_name_out]
    xs, ys = [], []
    ordered = sorted(texts, key=len)  # similar lengths per batch: little padding (row order does not matter)
    n_batches = -(-len(ordered) // batch_size)
    for j, i in enumerate(range(0, len(ordered), batch_size)):
        report("reconstruction rows", j, n_batches)
        batch = model.to_tokens(ordered[i : i + batch_size])
        _, cache = model.run_with_cache(batch, names=names, return_logits=False)
        mask = rule.kept(batch)
        xs.append(cache[cfg.hook_name][mask])
        ys.append(cache[cfg.hook_name_out][mask])
    report("reconstruction rows", n_batches, n_batches)
    X, Y = torch.cat(xs), torch.cat(ys)
    metrics = evaluate(dictionary, X, Y).to_dict()
    metrics.pop("density", None)  # one number per feature: too long for a summary
    spliced = spliced_metrics(model, dictionary, texts, exclude_first=rule.exclude_first, progress=progress)
    return {"kind": "dictionary_metrics", "hook_name": cfg.hook_name, "hook_name_out": cfg.hook_name_out,
            "positions": rule.to_dict(), "metrics": metrics, "spliced": spliced.to_dict()}
