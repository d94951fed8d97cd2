"""What every norm module in the supported families is, read the same way everywhere.

LayerNorm (GPT-2, NeoX, CRATE) centres and divides by the standard deviation; RMSNorm (Llama, Mistral,
Qwen2, Gemma) divides by the root mean square. The gain a norm multiplies by is its `weight`, except
in Gemma's RMSNorm, which stores the offset from one and multiplies by `1 + weight` (its weights
initialise at zero). Each norm class is named once in a table here (`register_norm` adds one), so no
caller guesses a norm's kind from its attributes.

Linearising a norm at a forward pass ("freezing" it) keeps each token's divisor from that pass, which
makes the norm affine in its input: direct-effect ablations and circuit attributions both rely on it,
so both take the divisor from here. Weight-based scores read the unembedding through the final norm's
gain (`final_norm_gain`, `folded_W_U`), as TransformerLens folds it by default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from lmscope.errors import InputError

if TYPE_CHECKING:
    from lmscope.model.hooked import HookedModel


@dataclass(frozen=True)
class NormKind:
    """How a norm class computes: `centers` (LayerNorm) or not; the attribute holding its epsilon;
    `unit_offset`: the gain is `1 + weight` (Gemma) rather than `weight`."""

    centers: bool
    eps_attr: str
    unit_offset: bool = False


_LAYER_NORM = NormKind(centers=True, eps_attr="eps")
_RMS_VARIANCE_EPS = NormKind(centers=False, eps_attr="variance_epsilon")
_RMS_GEMMA = NormKind(centers=False, eps_attr="eps", unit_offset=True)

_KINDS: dict[str, NormKind] = {
    "LayerNorm": _LAYER_NORM,  # torch.nn.LayerNorm (GPT-2, GPT-NeoX, CRATE)
    "LlamaRMSNorm": _RMS_VARIANCE_EPS,
    "MistralRMSNorm": _RMS_VARIANCE_EPS,
    "Qwen2RMSNorm": _RMS_VARIANCE_EPS,
    "GemmaRMSNorm": _RMS_GEMMA,
    "Gemma2RMSNorm": _RMS_GEMMA,
    "Gemma3RMSNorm": _RMS_GEMMA,
}


def register_norm(cls: type[nn.Module], kind: NormKind) -> None:
    """Tell lmscope how a norm class computes (for a family added outside this package)."""
    _KINDS[cls.__name__] = kind


def norm_kind(norm: nn.Module) -> NormKind:
    """The kind of `norm`, found by its class (or the nearest base class) in the table."""
    if isinstance(norm, nn.LayerNorm):
        return _LAYER_NORM
    for cls in type(norm).__mro__:
        if cls.__name__ in _KINDS:
            return _KINDS[cls.__name__]
    raise InputError(f"norm {type(norm).__name__}: not a norm lmscope knows (known: {', '.join(sorted(_KINDS))})")


@dataclass(frozen=True)
class NormParts:
    """`centers` (LayerNorm) or not (RMSNorm); `eps`; `weight`: the per-dimension gain the norm actually
    multiplies by (Gemma: `1 + stored weight`), None when the norm has no weight; `bias` (None when absent)."""

    centers: bool
    eps: float
    weight: Tensor | None
    bias: Tensor | None


def norm_parts(norm: nn.Module) -> NormParts:
    """Read a LayerNorm or an RMSNorm, with the gain as applied (so `weight * normalized + bias` is the output)."""
    kind = norm_kind(norm)
    weight = getattr(norm, "weight", None)  # None: LayerNorm(elementwise_affine=False)
    bias = getattr(norm, "bias", None)
    gain = None
    if isinstance(weight, Tensor):
        gain = weight.detach()
        if kind.unit_offset:
            gain = 1.0 + gain.float() if gain.dtype in (torch.float16, torch.bfloat16) else 1.0 + gain
    return NormParts(kind.centers, float(getattr(norm, kind.eps_attr)), gain,
                     bias.detach() if isinstance(bias, Tensor) else None)


def frozen_divisor(norm: nn.Module, x: Tensor) -> Tensor:
    """Each token's divisor at the input `x [..., d]`: `sqrt(var(x) + eps)` (LayerNorm) or `sqrt(mean(x²) + eps)`
    (RMSNorm), shape `[...]`, in x's dtype (pass float64 for float64 arithmetic)."""
    parts = norm_parts(norm)
    spread = x.var(-1, unbiased=False) if parts.centers else x.pow(2).mean(-1)
    return torch.sqrt(spread + parts.eps)


def final_norm_gain(model: HookedModel) -> Tensor:
    """`[d_model]`: the per-dimension multiplier the final norm applies after normalising (LayerNorm and
    Llama: its weight; Gemma: 1 + weight; ones for a norm without weight). Its bias, if any, is not in it:
    see `folded_b_U`."""
    parts = norm_parts(model.adapter.ln_final())
    if parts.weight is None:
        return torch.ones(model.cfg.d_model, dtype=model.W_U.dtype, device=model.W_U.device)
    return parts.weight


def folded_W_U(model: HookedModel, fold: bool = True) -> Tensor:
    """`W_U [d_model, d_vocab]` with the final norm's gain folded in (`gain[:, None] * W_U`), so that
    `logits = normalized(x) @ folded_W_U + folded_b_U` where `normalized` is the norm without its affine part;
    `fold=False` returns the raw `W_U`. A model with final logit softcapping applies it after this product
    (see the adapter's `logit_softcap`)."""
    W_U = model.W_U
    if not fold:
        return W_U
    return final_norm_gain(model).to(W_U.dtype)[:, None] * W_U


def folded_b_U(model: HookedModel) -> Tensor:
    """`[d_vocab]`: the logit offset the final norm's bias adds once its gain is folded into `W_U`
    (`bias @ W_U`, plus the unembedding's own bias); zeros for RMSNorm models without an unembedding bias."""
    W_U = model.W_U
    parts = norm_parts(model.adapter.ln_final())
    out = torch.zeros(W_U.shape[1], dtype=W_U.dtype, device=W_U.device)
    if parts.bias is not None:
        out = out + parts.bias.to(W_U.dtype) @ W_U
    unembed_bias = getattr(model.adapter.unembed(), "bias", None)
    if isinstance(unembed_bias, Tensor):
        out = out + unembed_bias.detach().to(W_U.dtype)
    return out


def read_through(norm: nn.Module | None, W: Tensor, fold: bool = True) -> Tensor:
    """`W [d_model, ...]` (float64) as a reader of `norm`'s output sees the residual stream: the gain folded in and,
    for a LayerNorm, centred along `d_model` (the norm removes the mean, so that component never reaches `W`);
    unchanged without a norm or with `fold=False`."""
    W = W.detach().double()
    if norm is None or not fold:
        return W
    parts = norm_parts(norm)
    if parts.weight is not None:
        W = parts.weight.double().reshape(-1, *([1] * (W.ndim - 1))) * W
    return W - W.mean(0, keepdim=True) if parts.centers else W


_LN2 = re.compile(r"blocks\.(\d+)\.ln2\.hook_normalized")


def norm_of_hook(model: HookedModel, hook_name: str) -> nn.Module | None:
    """The norm whose output `hook_name` is (an MLP input norm, the final norm), None for any other hook point
    (a residual stream): what a dictionary on that hook point reads the residual stream through."""
    match = _LN2.fullmatch(hook_name)
    if match is not None:
        return model.adapter.ln2(int(match[1]))
    return model.adapter.ln_final() if hook_name == "ln_final.hook_normalized" else None
