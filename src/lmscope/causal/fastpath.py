"""Doing less work in patched forwards of a HookedModel: skip what the base run already computed.

A patch at layer `l` and position `p` leaves every earlier layer, and every earlier position, exactly
as in the base run. So a patched forward can start at block `l` from the base's cached `hook_resid_pre`
(`start_at`), and at position `p` with the base's keys and values of positions `< p` as the attention
cache (`Window`): for a patch at each row's last token that is one token per row instead of the whole
prompt. Only the last token's logits are unembedded (`last_logits_only`). Models whose forward returns
no key/value cache simply run whole sequences, and so do inputs longer than a model's sliding attention
window (Gemma's local layers, Mistral): there a query's window is counted in the cache's positions, which
right padding shifts, so a cached window could see keys the plain forward does not.

The cache goes in and out under the name the installed transformers uses: `cache` where the forward has
that keyword (`past_key_values` is deprecated there and warns), `past_key_values` in the releases before.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lmscope.causal.components import LAST
from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel
from lmscope.model.hookpoints import HookPoint

KV = list[tuple[Tensor, Tensor]]


def base_run(model: HookedModel, x: Tensor, last: Tensor, names: list[str], want_kv: bool
             ) -> tuple[Tensor, dict[str, Tensor], KV | None]:
    """Next-token logits at each row's last token `[N, d_vocab]`, the named activations, and (if asked and
    the model returns one) every layer's attention keys and values."""
    cache: dict[str, Tensor] = {}

    def capture(t: Tensor, *, hook: HookPoint) -> None:
        cache[hook.name] = t.detach()

    want_kv = want_kv and fits_window(model, x.shape[1])
    with last_logits_only(model, last), model.hooks([(n, capture) for n in names]):
        out = model.hf(input_ids=x, use_cache=want_kv)
    kv = None
    layers = getattr(returned_cache(out), "layers", None)
    if want_kv and layers is not None and len(layers) == model.cfg.n_layers:
        kv = [(layer.keys, layer.values) for layer in layers]
    return out.logits[:, 0], cache, kv


def cache_keyword(hf: nn.Module) -> str:
    """The keyword `hf.forward` takes a key/value cache by: `cache`, or `past_key_values` in the
    transformers releases before the rename (the signature is read through the deprecation wrapper)."""
    return "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"


def returned_cache(out: Any) -> Any:
    """The key/value cache an HF forward returned (field `cache`, or `past_key_values` before the rename),
    or None. Found among the output's own keys: asking for the old name, even `"past_key_values" in out`, is
    what logs transformers' deprecation."""
    return next((value for key, value in out.items() if key in ("cache", "past_key_values")), None)


def sliding_window(model: HookedModel) -> int | None:
    """The smallest local-attention window of any layer (the adapter's `sliding_window`), or the config's
    `sliding_window` where that is smaller (Mistral and Qwen2 keep it there); None when attention is global."""
    windows = [w for layer in range(model.cfg.n_layers) if (w := model.adapter.sliding_window(layer))]
    configured = getattr(model.hf.config.get_text_config(), "sliding_window", None)
    if isinstance(configured, int) and configured > 0:
        windows.append(configured)
    return min(windows, default=None)


def fits_window(model: HookedModel, length: int) -> bool:
    """Whether every query of `length` positions sees all earlier keys (no sliding window cuts in), so a
    cached forward computes exactly what the plain one does."""
    window = sliding_window(model)
    return window is None or length <= window


@dataclass
class Window:
    """The positions a patched forward computes for some base rows: their token ids, where each row's last
    token sits in them (`local_last [rows]`), the offset of fixed positions (-1: one token per row, at its
    last position), and the extra HF keyword arguments (attention cache, positions, mask)."""

    ids: Tensor
    local_last: Tensor
    offset: int
    kwargs: dict[str, Any]

    def take(self, t: Tensor, rows_last: Tensor) -> Tensor:
        """The window's part of a base activation `[rows, pos, ...]`."""
        if self.offset < 0:
            return t[torch.arange(t.shape[0]), rows_last][:, None]
        return t[:, self.offset : self.offset + self.ids.shape[1]]


def window(model: HookedModel, ids: Tensor, last: Tensor, start: int | None, kv: KV | None,
           b_idx: Tensor, first_layer: int = 0, length: int | None = None) -> Window:
    """Base rows `b_idx` from position `start` on (LAST: only each row's last token; None: every position;
    `length`: only that many positions), attending to the base's keys and values of the earlier positions
    (of blocks from `first_layer` on)."""
    ids, last = ids[b_idx], last[b_idx]
    if start is None or kv is None:  # no cache made either: a sliced block list would not match it
        return Window(ids, last, 0, {"use_cache": False})
    from transformers import DynamicCache

    kwargs: dict[str, Any]
    if start == LAST:
        width = int(last.max())
        keep = torch.arange(width + 1)[None] < last[:, None]
        keep[:, width] = True  # the new token itself
        kwargs = {"attention_mask": keep.long(), "position_ids": last[:, None]}
        win = Window(ids[torch.arange(len(ids)), last][:, None], torch.zeros_like(last), -1, kwargs)
    else:
        width, stop = start, ids.shape[1] if length is None else start + length
        kwargs = {"position_ids": torch.arange(start, stop)[None].expand(len(ids), -1)}
        win = Window(ids[:, start:stop], (last - start).clamp_max(stop - start - 1), start, kwargs)
    cache = DynamicCache(config=model.hf.config)
    for layer, (k, v) in enumerate(kv):
        if layer < first_layer:  # never read; only its length is (by the mask): a view, no copy
            cache.update(k[:1, :, :width].expand(len(b_idx), -1, -1, -1),
                         v[:1, :, :width].expand(len(b_idx), -1, -1, -1), layer)
        else:
            cache.update(k[b_idx, :, :width], v[b_idx, :, :width], layer)
    kwargs[cache_keyword(model.hf)] = cache
    kwargs["use_cache"] = True
    return win


@contextmanager
def last_logits_only(model: HookedModel, last: Tensor | None) -> Iterator[None]:
    """Unembed only each row's last real token: logits come back as `[rows, 1, d_vocab]`."""
    def pre(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        h = args[0]
        return (h[torch.arange(h.shape[0]), last][:, None], *args[1:])

    handle = model.adapter.unembed().register_forward_pre_hook(pre)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def start_at(model: HookedModel, layer: int, stop: int | None = None) -> Iterator[None]:
    """Run only blocks `layer..stop-1` (the caller feeds block `layer` its cached input); restored on exit.

    Families whose forward looks up each block's attention type by its index in the loop (`config.layer_types`:
    Gemma's local and global layers, Qwen2) get that list sliced the same way, or block `layer` would run with
    block 0's mask and rotary embedding."""
    if layer == 0 and stop is None:
        yield
        return
    blocks = model.adapter.blocks()
    parent, attr = _parent_of(model.hf, blocks)
    config = model.hf.config.get_text_config()
    layer_types = getattr(config, "layer_types", None)  # read by index in the loop (Gemma, Qwen2): slice it too
    setattr(parent, attr, nn.ModuleList(list(blocks)[layer:stop]))
    if layer_types is not None:
        config.layer_types = list(layer_types)[layer:stop]
    try:
        yield
    finally:
        setattr(parent, attr, blocks)
        if layer_types is not None:
            config.layer_types = layer_types


def _parent_of(root: nn.Module, child: nn.Module) -> tuple[nn.Module, str]:
    for module in root.modules():
        for attr, sub in module.named_children():
            if sub is child:
                return module, attr
    raise InputError("model: could not find its block list to start a forward pass at a layer")
