"""All of a dictionary's metrics on held-out text: reconstruction (L0, FVU, dead/dense) and spliced LM loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmscope.dictionary.metrics import evaluate
from lmscope.dictionary.modules import Dictionary
from lmscope.dictionary.splice import spliced_metrics
from lmscope.model.hooked import HookedModel


def dictionary_metrics(model: HookedModel, dictionary: Dictionary, texts: Sequence[str]) -> dict[str, Any]:
    """`{"metrics": ..., "spliced": ...}` on the real tokens of `texts` (BOS left out), JSON-safe."""
    cfg = dictionary.cfg
    names = [cfg.hook_name] if cfg.hook_name == cfg.hook_name_out else [cfg.hook_name, cfg.hook_name_out]
    xs, ys = [], []
    for i in range(0, len(texts), 32):
        batch = model.to_tokens(list(texts[i : i + 32]))
        _, cache = model.run_with_cache(batch.input_ids, names=names, return_logits=False)
        mask = batch.attention_mask.bool()
        if model.prepend_bos:
            mask[:, 0] = False
        xs.append(cache[cfg.hook_name][mask])
        ys.append(cache[cfg.hook_name_out][mask])
    import torch

    X, Y = torch.cat(xs), torch.cat(ys)
    metrics = evaluate(dictionary, X, Y).to_dict()
    metrics.pop("density", None)  # one number per feature: too long for a summary
    return {"kind": "dictionary_metrics", "hook_name": cfg.hook_name, "hook_name_out": cfg.hook_name_out,
            "metrics": metrics, "spliced": spliced_metrics(model, dictionary, texts).to_dict()}
