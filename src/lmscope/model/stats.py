"""Whole-model measurements over text: per-layer neuron statistics and the LM loss (with hooks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmscope.model.hooked import HookedModel
from lmscope.model.inputs import Inputs


@dataclass(frozen=True)
class LayerNeuronStats:
    """Statistics of `blocks.{layer}.mlp.hook_post` over the text tokens of a batch (BOS excluded)."""

    layer: int
    mean: float
    std: float
    max: float
    frac_active: float  # share of (token, neuron) pairs > 0
    frac_dead: float  # share of neurons never > 0
    neuron_density: list[float]  # per neuron: share of tokens where it is > 0
    top_neuron: int  # the neuron with the largest activation variance
    top_tokens: list[str]  # the tokens where `top_neuron` fires most

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def neuron_stats(model: HookedModel, inputs: Inputs, *, top_k: int = 8) -> list[LayerNeuronStats]:
    """One `LayerNeuronStats` per layer, from a single cached forward pass over `inputs`."""
    batch = model.to_tokens(inputs)
    names = [f"blocks.{layer}.mlp.hook_post" for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(batch.input_ids, names=names, return_logits=False)
    mask = batch.attention_mask.bool()
    if model.prepend_bos:
        mask[:, 0] = False  # the BOS position is an attention sink, not text: leave it out
    flat_ids = batch.input_ids[mask]
    out = []
    for layer, name in enumerate(names):
        acts = cache[name][mask].float()  # [tokens, d_mlp]
        on = acts > 0
        density = on.float().mean(0)
        top = int(acts.var(0).argmax())
        order = acts[:, top].topk(min(top_k, acts.shape[0])).indices
        words = [model.tokenizer.decode([int(flat_ids[i])]) if model.tokenizer else str(int(flat_ids[i]))
                 for i in order]
        out.append(LayerNeuronStats(layer, acts.mean().item(), acts.std().item(), acts.max().item(),
                                    on.float().mean().item(), (density == 0).float().mean().item(),
                                    density.tolist(), top, words))
    return out


def lm_loss(model: HookedModel, texts: Sequence[str], *, hooks: Sequence[tuple[str, Any]] = (),
            batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats) over the real tokens of `texts`, with `hooks` applied.

    Batches are right-padded; under causal attention real positions never see the padding.
    """
    total, count = 0.0, 0
    for i in range(0, len(texts), batch_size):
        batch = model.to_tokens(list(texts[i : i + batch_size]))
        with torch.no_grad():
            logits = model.run_with_hooks(batch.input_ids, hooks=hooks)
        assert logits is not None
        mask = batch.attention_mask[:, 1:].bool()
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch.input_ids[:, 1:],
                                                   reduction="none")
        total += float(losses[mask].sum())
        count += int(mask.sum())
    return total / max(count, 1)
