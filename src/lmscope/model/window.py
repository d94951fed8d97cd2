"""Running a window of layers and positions of a HookedModel from a cached state, with the HF module tree untouched.

A change at layer `l` and position `p` leaves every earlier layer, and every earlier position, exactly as in an
unchanged base run. So a changed forward can start at block `l` from the base's cached `hook_resid_pre`
(`run_window(first_layer=l, resid=...)`), and at position `p` with the base's keys and values of positions `< p`
as the attention cache (`window`): for a change at each row's last token that is one token per row instead of the
whole prompt. Only the last token's logits need unembedding (`last_logits_only`, or `run_window(last=...)`).

`run_window` calls the blocks `first_layer..stop_layer-1` one by one with what the family's own forward gives
them: it runs the HF forward on the window's ids up to the first block only (embeddings, masks, rotary
embeddings; a hook stops it there) and keeps block 0's arguments, and the adapter (`Adapter.block_inputs`)
turns them into block `l`'s where the family gives its layers different masks or rotary embeddings (Gemma's
local and global layers, Qwen2). Nothing of the model (its block list, its config) is changed, so hooks,
attention patterns and every other reader see the model as it is.

Models whose forward returns no key/value cache simply run whole sequences, and so do inputs longer than a
model's sliding attention window (Gemma's local layers, Mistral): there a query's window is counted in the
cache's positions, which right padding shifts, so a cached window could see keys the plain forward does not.

The cache goes in and out under the name the installed transformers uses: `cache` where the forward has that
keyword (`past_key_values` is deprecated there and warns), `past_key_values` in the releases before.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lmscope.errors import InputError, LmscopeError
from lmscope.model.adapters import hf_module
from lmscope.model.hookpoints import HookPoint

if TYPE_CHECKING:
    from lmscope.model.hooked import HookedModel, HookFn

KV = list[tuple[Tensor, Tensor]]
"""Every layer's attention keys and values, `[rows, kv_head, pos, d_head]` each."""
LAST = -1
"""A window start meaning "only each row's last real token" (the unit position `@-1`)."""


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
    configured = getattr(hf_module(model.hf).config.get_text_config(), "sliding_window", None)
    if isinstance(configured, int) and configured > 0:
        windows.append(configured)
    return min(windows, default=None)


def fits_window(model: HookedModel, length: int) -> bool:
    """Whether every query of `length` positions sees all earlier keys (no sliding window cuts in), so a
    cached forward computes exactly what the plain one does."""
    window = sliding_window(model)
    return window is None or length <= window


def base_run(model: HookedModel, x: Tensor, last: Tensor, names: Sequence[str], want_kv: bool
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


@dataclass
class Window:
    """The positions a changed forward computes for some base rows: their token ids, where each row's last
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
    if start is None or kv is None:  # no cache made either: whole sequences
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
    cache = DynamicCache(config=hf_module(model.hf).config)
    for layer, (k, v) in enumerate(kv):
        if layer < first_layer:  # never read; only its length is (by the mask): a view, no copy
            cache.update(k[:1, :, :width].expand(len(b_idx), -1, -1, -1),
                         v[:1, :, :width].expand(len(b_idx), -1, -1, -1), layer)
        else:
            cache.update(k[b_idx, :, :width], v[b_idx, :, :width], layer)
    kwargs[cache_keyword(model.hf)] = cache
    kwargs["use_cache"] = True
    return win


def lazy_window(model: HookedModel, ids: Tensor, last: Tensor, start: int | None, kv: KV | None, b_idx: Tensor,
                first_layer: int = 0, *, length: int | None = None, retain: bool = False) -> Window:
    """`window`, with the base's keys and values gathered for rows `b_idx` only as each layer runs.

    The window is built on stand-ins one number wide (`d_head` times smaller; its cache then has the right
    lengths, which is all the attention mask reads, and an empty one would count as no cache at all); each
    layer's first `update` gathers that layer's prefix and returns it with the new keys. Unless `retain` (a greedy
    continuation reads the cache again), nothing is stored, so one layer's keys and values are alive at a time.
    """
    if start is None or kv is None:
        return window(model, ids, last, start, kv, b_idx, first_layer, length=length)
    narrow = [(k[..., :1], v[..., :1]) for k, v in kv]
    win = window(model, ids, last, start, narrow, b_idx, first_layer, length=length)
    cache = win.kwargs[cache_keyword(model.hf)]
    for layer in range(first_layer, len(kv)):
        _gather_on_use(cache.layers[layer], kv[layer], b_idx, retain)
    return win


def _gather_on_use(layer: Any, kv: tuple[Tensor, Tensor], rows: Tensor, retain: bool) -> None:
    """Make a cache layer holding narrow stand-ins gather its prefix `kv[rows, :, :width]` when first used."""
    width = layer.keys.shape[-2]

    def update(key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        keys, values = kv[0][rows, :, :width], kv[1][rows, :, :width]
        if not retain:
            return torch.cat([keys, key_states], dim=-2), torch.cat([values, value_states], dim=-2)
        del layer.update  # from now on the layer's own method, on the gathered prefix
        layer.keys, layer.values = keys, values
        return layer.update(key_states, value_states, *args, **kwargs)

    layer.update = update


def kv_cache(model: HookedModel, kv: KV) -> Any:
    """A transformers `DynamicCache` for `model` holding `kv` (every layer's keys and values)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=hf_module(model.hf).config)
    for layer, (k, v) in enumerate(kv):
        cache.update(k, v, layer)
    return cache


def greedy_decode(model: HookedModel, logits: Tensor, cache: Any, mask: Tensor, next_pos: Tensor,
                  n_tokens: int) -> Tensor:
    """Tokens `[rows, n_tokens]`: argmax of `logits [rows, d_vocab]`, then one cached step at a time.

    `cache` holds every layer's keys/values of the prompt (updated in place), `mask [rows, width]` which of
    its positions each row attends to, `next_pos [rows]` the position of the first new token. Hooks attached
    around the call (`model.hooks`) run at every step.
    """
    tokens = [logits.argmax(-1)]
    for step in range(1, n_tokens):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model.hf(input_ids=tokens[-1][:, None], attention_mask=mask, position_ids=(next_pos + step - 1)[:, None],
                       use_cache=True, **{cache_keyword(model.hf): cache})
        tokens.append(out.logits[:, -1].argmax(-1))
    return torch.stack(tokens, dim=1)


@contextmanager
def last_logits_only(model: HookedModel, last: Tensor | None) -> Iterator[None]:
    """Unembed only each row's last real token: logits come back as `[rows, 1, d_vocab]` (a hook on the unembedding's
    input, removed on exit; `last=None` changes nothing)."""
    if last is None:
        yield
        return

    def pre(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        h = args[0]
        return (h[torch.arange(h.shape[0]), last][:, None], *args[1:])

    handle = model.adapter.unembed().register_forward_pre_hook(pre)
    try:
        yield
    finally:
        handle.remove()


def run_window(model: HookedModel, ids: Tensor, kwargs: dict[str, Any] | None = None, *, first_layer: int = 0,
               stop_layer: int | None = None, resid: Tensor | None = None, last: Tensor | None = None,
               hooks: Sequence[tuple[str, HookFn]] = ()) -> Tensor:
    """Blocks `first_layer..stop_layer-1` on the window `ids [rows, pos]` with `hooks` attached.

    `kwargs` are the HF forward's keyword arguments for the window (attention cache, `position_ids`,
    `attention_mask`: `Window.kwargs`). Block `first_layer` reads `resid [rows, pos, d_model]` (its cached
    `hook_resid_pre`; with `first_layer=0` the embeddings of `ids`, and `resid` must be None). Returns the last
    block's output (`hook_resid_post` of `stop_layer - 1`) when `stop_layer` is given, else the logits
    `[rows, pos, d_vocab]`, or `[rows, 1, d_vocab]` at each row's position `last [rows]`.
    """
    n, kwargs = model.cfg.n_layers, dict(kwargs or {})
    stop = n if stop_layer is None else stop_layer
    if not (isinstance(first_layer, int) and isinstance(stop, int) and 0 <= first_layer < stop <= n):
        raise InputError(f"first_layer/stop_layer: expected 0 <= first_layer < stop_layer <= {n}, got "
                         f"{first_layer} and {stop_layer}")
    if (resid is None) != (first_layer == 0):
        raise InputError(f"resid: expected block {first_layer}'s input exactly when first_layer > 0 "
                         f"(got {'none' if resid is None else 'one'} for first_layer={first_layer})")
    if first_layer == 0 and stop_layer is None:  # the whole model: its own forward
        with model.hooks(hooks), last_logits_only(model, last):
            return model.hf(input_ids=ids, **kwargs).logits
    if first_layer > 0:  # block 0's arguments, before any hook is attached (none of them is on the way)
        args, block_kwargs = block0_inputs(model, ids, kwargs)
    with model.hooks(hooks):
        if first_layer == 0:  # the embeddings as the hooked model gives them to block 0
            args, block_kwargs = block0_inputs(model, ids, kwargs)
            resid = args[0]
        h: Tensor = resid  # type: ignore[assignment]
        blocks = model.adapter.blocks()
        inputs = _block_inputs(model, range(first_layer, stop), args, block_kwargs, kwargs.get("attention_mask"))
        for layer, (layer_args, layer_kwargs) in zip(range(first_layer, stop), inputs, strict=True):
            out = blocks[layer](h, *layer_args[1:], **layer_kwargs)
            h = out[0] if isinstance(out, tuple) else out
        if stop_layer is not None:
            return h
        return _unembed(model, h, last)


def _block_inputs(model: HookedModel, layers: range, args: tuple[Any, ...], kwargs: dict[str, Any],
                  attention_mask: Tensor | None) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every block's arguments, all made before any block runs, as the HF forward makes them: a mask made from the
    key/value cache after an earlier block had written to it would span those keys too. One per layer type
    (`config.layer_types`, where the family has it), shared by the layers of that type."""
    config: Any = model.hf.config
    types = getattr(config.get_text_config(), "layer_types", None)
    made: dict[object, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    out = []
    for layer in layers:
        key = types[layer] if types else layer
        if key not in made:
            made[key] = model.adapter.block_inputs(layer, args, kwargs, attention_mask)
        out.append(made[key])
    return out


def _unembed(model: HookedModel, h: Tensor, last: Tensor | None) -> Tensor:
    """The model's head on the last block's output: final norm, (the `last` positions,) unembedding, and the
    final soft-cap `c * tanh(logits / c)` where the family has one, computed as HF does."""
    h = model.adapter.ln_final()(h)
    if last is not None:
        h = h[torch.arange(h.shape[0]), last][:, None]
    logits = model.adapter.unembed()(h)
    cap = model.adapter.logit_softcap
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


class _Captured(Exception):
    """Raised by the hook on block 0 once it has its arguments: the rest of the forward is not needed."""


def block0_inputs(model: HookedModel, ids: Tensor, kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """What the family's own forward passes block 0 for `ids` and `kwargs`: `(args, kwargs)`, the hidden states
    first in `args`. The forward runs only up to block 0 (embeddings, masks, rotary embeddings)."""
    seen: dict[str, Any] = {}

    def grab(module: nn.Module, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        seen["args"], seen["kwargs"] = args, kw
        raise _Captured

    handle = model.adapter.blocks()[0].register_forward_pre_hook(grab, with_kwargs=True, prepend=True)
    try:
        model.hf(input_ids=ids, **kwargs)
    except _Captured:
        pass
    finally:
        handle.remove()
    if "args" not in seen:
        raise LmscopeError(f"{model.cfg.family}: the forward pass never reached block 0")
    args, kw = seen["args"], dict(seen["kwargs"])
    if not args:  # hidden states passed by keyword
        args = (kw.pop("hidden_states"),)
    return args, kw
