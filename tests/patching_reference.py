"""The reference every patching test compares with: one `Patch` intervention at a time on the whole forward."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lmscope import HookedModel
from lmscope.causal import Component
from lmscope.model.interventions import Patch


def one_patch_at_a_time(model: HookedModel, base: torch.Tensor, source: torch.Tensor, comps: Sequence[Component],
                        metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`[pair, component]` effects of patching each component from `source` into `base` (inputs without padding,
    so a unit at position -1 is the last column)."""
    _, cache = model.run_with_cache(source)
    rows = torch.arange(base.shape[0])
    clean = metric(model(base)[:, -1], rows)
    last = base.shape[1] - 1
    naive = []
    for c in comps:
        units = [str(u).replace("@-1", f"@{last}") for u in c.units]
        logits = model.run_with_hooks(base, hooks=Patch(units, cache).hooks())
        naive.append(metric(logits[:, -1], rows) - clean)
    effects = torch.stack(naive, 1)
    assert effects.abs().mean() > 1e-3  # the patches do something
    return effects
