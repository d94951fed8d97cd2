"""Attention patterns on demand, without leaving the fast attention path.

HF models call their attention function through `transformers.AttentionInterface`, by the name in
`config._attn_implementation`. While a pattern hook is active, lmscope switches that name to a wrapper
registered under `lmscope+<base>` whose mask function is the base one. The wrapper runs the base
implementation unchanged (so logits stay bit-identical when the hook only reads), computes the pattern
`[batch, head, q, k]` from the same queries, keys and mask, and hands it to the hook. Only a hook that
returns a new pattern makes the wrapper recompute the output as `pattern @ V`.

The pattern follows the arguments the model passes to its attention function: `scaling` (Gemma's
`query_pre_attn_scalar ** -0.5`, not always `d_head ** -0.5`), `softcap` (Gemma 2 caps scores as
`c * tanh(s / c)` before the mask) and the mask of the layer (local layers get their sliding-window
mask), so local, global and soft-capped layers all get the pattern their output was computed with.
Where the base implementation is "eager", the family's own `eager_attention_forward` runs, found in the
attention module's modelling file, so that bit-identity does not rest on lmscope's copy of it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

PatternHook = Callable[[Tensor], Tensor | None]
_HOOK_ATTR = "_lmscope_pattern_hook"
_PREFIX = "lmscope+"


def _repeat_kv(t: Tensor, n_heads: int) -> Tensor:
    return t if t.shape[1] == n_heads else t.repeat_interleave(n_heads // t.shape[1], dim=1)


def attention_pattern(query: Tensor, key: Tensor, mask: Tensor | None, scaling: float,
                      softcap: float | None = None) -> Tensor:
    """Softmax attention weights `[batch, head, q, k]` as eager attention computes them (fp32 softmax):
    scores `q . k * scaling`, soft-capped to `softcap * tanh(scores / softcap)` when given, then masked.
    Under a boolean (SDPA) mask, a query that may attend to nothing gets a zero row, as SDPA gives it."""
    key = _repeat_kv(key, query.shape[1])
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is None:
        q_len, k_len = scores.shape[-2:]
        causal = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril(k_len - q_len)
        scores = scores.masked_fill(~causal, float("-inf"))
    elif mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
        # a query that may attend to nothing (right padding beyond a sliding window) gets a zero row, as
        # SDPA gives it, not NaN: a NaN there would reach real positions through `0 * NaN` in `pattern @ V`
        pattern = torch.softmax(scores, dim=-1, dtype=torch.float32)
        return pattern.masked_fill(~mask.any(-1, keepdim=True), 0.0).to(query.dtype)
    else:
        scores = scores + mask
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)


def _wrapped(base_name: str) -> Callable[..., tuple[Tensor, Tensor | None]]:
    def attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None,
                  **kwargs: Any) -> tuple[Tensor, Tensor | None]:
        base = ALL_ATTENTION_FUNCTIONS.get_interface(base_name, _family_eager(module))
        hook: PatternHook | None = getattr(module, _HOOK_ATTR, None)
        if hook is None:
            return base(module, query, key, value, mask, **kwargs)
        scaling = kwargs.get("scaling")
        if scaling is None:
            scaling = query.shape[-1] ** -0.5
        pattern = attention_pattern(query, key, mask, scaling, kwargs.get("softcap"))
        replaced = hook(pattern)
        if replaced is None:
            return base(module, query, key, value, mask, **kwargs)
        out = torch.matmul(replaced.to(value.dtype), _repeat_kv(value, query.shape[1]))
        return out.transpose(1, 2).contiguous(), replaced

    return attention


def _eager(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None,
           scaling: float | None = None, softcap: float | None = None, **_: Any) -> tuple[Tensor, Tensor]:
    pattern = attention_pattern(query, key, mask, scaling if scaling is not None else query.shape[-1] ** -0.5,
                                softcap)
    out = torch.matmul(pattern, _repeat_kv(value, query.shape[1]))
    return out.transpose(1, 2).contiguous(), pattern


def _family_eager(module: nn.Module) -> Callable[..., tuple[Tensor, Tensor]]:
    """The eager attention of the module's own modelling file (what the model runs without lmscope), or
    lmscope's equivalent where the file defines none."""
    return getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None) or _eager


def _ensure_registered(base_name: str) -> str:
    name = _PREFIX + base_name
    if name not in ALL_ATTENTION_FUNCTIONS._global_mapping:
        AttentionInterface.register(name, _wrapped(base_name))
        # the mapping's values are mask functions; transformers' dict literal of them infers as `function`, which
        # mypy does not take for a Callable
        mask_fns = cast(dict[str, Callable[..., Any]], ALL_MASK_ATTENTION_FUNCTIONS._global_mapping)
        mask_fn = mask_fns.get(base_name)
        if mask_fn is None:
            mask_fn = mask_fns["eager"]
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, mask_fn)
    return name


@contextmanager
def pattern_hooks(hf_model: nn.Module, hooks: dict[nn.Module, PatternHook]) -> Iterator[None]:
    """Route the attention of `hf_model` through the pattern wrapper while `hooks` are attached."""
    if not hooks:
        yield
        return
    # The config the attention reads: the model's, or the text sub-config of a multimodal model (Gemma 3).
    config = cast(Any, hf_model.config).get_text_config()
    base = config._attn_implementation or "eager"
    for module, hook in hooks.items():
        setattr(module, _HOOK_ATTR, hook)
    config._attn_implementation = _ensure_registered(base)
    try:
        yield
    finally:
        config._attn_implementation = base
        for module in hooks:
            if hasattr(module, _HOOK_ATTR):
                delattr(module, _HOOK_ATTR)
