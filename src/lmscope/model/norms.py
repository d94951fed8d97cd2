"""What every norm module in the supported families is, read the same way everywhere.

LayerNorm (GPT-2, NeoX, CRATE) centres and divides by the standard deviation; RMSNorm (Llama) divides by
the root mean square. Linearising a norm at a forward pass ("freezing" it) keeps each token's divisor from
that pass, which makes the norm affine in its input: direct-effect ablations and circuit attributions both
rely on it, so both take the divisor from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class NormParts:
    """`centers` (LayerNorm) or not (RMSNorm); `eps`; the affine `weight` and `bias` (None when absent)."""

    centers: bool
    eps: float
    weight: Tensor | None
    bias: Tensor | None


def norm_parts(norm: nn.Module) -> NormParts:
    """Read a LayerNorm or an RMSNorm (HF names its epsilon `eps` or `variance_epsilon`)."""
    eps = getattr(norm, "eps", None)
    if eps is None:
        eps = getattr(norm, "variance_epsilon", 1e-6)
    weight = getattr(norm, "weight", None)
    bias = getattr(norm, "bias", None)
    return NormParts(isinstance(norm, nn.LayerNorm), float(eps),
                     weight.detach() if isinstance(weight, Tensor) else None,
                     bias.detach() if isinstance(bias, Tensor) else None)


def frozen_divisor(norm: nn.Module, x: Tensor) -> Tensor:
    """Each token's divisor at the input `x [..., d]`: `sqrt(var(x) + eps)` (LayerNorm) or `sqrt(mean(x²) + eps)`
    (RMSNorm), shape `[...]`, in x's dtype (pass float64 for float64 arithmetic)."""
    parts = norm_parts(norm)
    spread = x.var(-1, unbiased=False) if parts.centers else x.pow(2).mean(-1)
    return torch.sqrt(spread + parts.eps)
