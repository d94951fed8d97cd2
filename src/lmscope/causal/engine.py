"""The patching engine: outcomes of base runs with components patched in from source runs, batched.

For `P` (base, source) pairs and `K` components, `patched_outcomes` returns `Y[P, K]`: the outcome of
base row `pairs[p, 0]` with component `k` set to its value in source row `pairs[p, 1]`. Components are
stacked on the batch dimension (one forward per chunk of pairs x components). On a `HookedModel` the
forward starts where the patch does (`lmscope.model.window.run_window`): at the patched layer, from the base
run's cached `hook_resid_pre`, and at the patched position, attending to the base's cached keys and
values. Everything else (a `HookedModule`) runs whole, with the same stacking.

Memory is bounded by `max_bytes` per forward, not by the number of pairs or components: rows per stacked
forward are cut to what their logits, activations and attention windows take; the base and source runs go in
row batches, and keep of a hook point only each row's last token where every unit there sits at it; the base's
keys and values are gathered for the patched rows one layer at a time, as that layer runs, and let go after it
(kept only for a greedy continuation, which reads them again).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lmscope.causal.components import LAST, Component
from lmscope.causal.continuation import Continuation, continue_base
from lmscope.errors import InputError
from lmscope.model.hooked import HookedModel
from lmscope.model.hookpoints import HookPoint
from lmscope.model.toy import Runnable
from lmscope.model.units import Unit
from lmscope.model.window import (
    KV,
    Window,
    base_run,
    cache_keyword,
    fits_window,
    greedy_decode,
    lazy_window,
    run_window,
    sliding_window,
)

Outcome = Callable[[Tensor, Tensor], Tensor]
"""`outcome(output, index) -> Tensor [rows]`: `output` is a HookedModel's next-token logits at each row's last
real token `[rows, d_vocab]` (any other model's own output); `index [rows]` says which base row each is."""
DEFAULT_MAX_BYTES = 128 * 2**20
"""Working memory one forward of the engine may take (its logits, activations and attention windows)."""
Progress = Callable[[str, int, int], None]
"""`progress(stage, i, n)`: stages "source run" and "base run" (0/1, then 1/1) and "patching" (stacked forwards
done out of n), as the CLI's `progress_bars` renders them."""


@dataclass(frozen=True)
class Prepared:
    """Model inputs as one tensor (`[N, pos]` token ids, or whatever a module takes) and last positions `[N]`."""

    x: Tensor
    last: Tensor | None

    def __len__(self) -> int:
        return int(self.x.shape[0])


def prepare(model: Runnable, inputs: Any) -> Prepared:
    """Tokenize texts for a HookedModel (right padding; last real positions kept); pass tensors through."""
    if isinstance(inputs, Prepared):
        return inputs
    if isinstance(model, HookedModel):
        batch = model.to_tokens(inputs)
        return Prepared(batch.input_ids, batch.last_positions())
    if not isinstance(inputs, Tensor):
        raise InputError(f"inputs: expected a tensor for {type(model).__name__}, got {type(inputs).__name__}")
    return Prepared(inputs, None)


@dataclass
class PatchRun:
    """`y_patched [P, K]`, the unpatched outcomes `y_base [N_base]` and `y_source [N_source]`."""

    y_patched: Tensor
    y_base: Tensor
    y_source: Tensor


def patched_outcomes(model: Runnable, base: Prepared, source: Prepared, pairs: Tensor,
                     components: Sequence[Component], outcome: Outcome, *, max_rows: int = 2048,
                     max_bytes: int = DEFAULT_MAX_BYTES, skip_layers: bool = True,
                     progress: Progress | None = None) -> PatchRun:
    """Outcome of every base row of `pairs [P, 2]` (base index, source index) with each component patched in.

    At most `max_rows` rows, and about `max_bytes` of working memory, per forward (module docstring); neither
    changes the numbers. `skip_layers=False` runs every patched forward from the embeddings (same numbers,
    more work).
    """
    if max_rows < 1 or max_bytes < 1:
        raise InputError(f"max_rows/max_bytes: expected positive numbers, got {max_rows} and {max_bytes}")
    pairs = torch.as_tensor(pairs, dtype=torch.long).reshape(-1, 2)
    fast = isinstance(model, HookedModel) and skip_layers
    hooks_needed = sorted({h for c in components for h in c.hooks})
    report = progress or (lambda stage, i, n: None)
    with torch.inference_mode():
        generative = isinstance(outcome, Continuation)
        report("source run", 0, 1)
        at_last = {h for h in hooks_needed if all(u.position == LAST for c in components for u in c.units
                                                  if u.hook == h)}
        y_src, src_cache, _, src_last = _run_batched(model, source, hooks_needed, outcome, want_kv=generative,
                                                     last_only=at_last, max_bytes=max_bytes)
        report("source run", 1, 1)
        _check_shapes(components, base, source, src_cache)
        groups = _groups(components, model if fast else None, base)
        if generative and (not fast or any(start != LAST for _, start, _ in groups)):
            raise InputError("outcome: a greedy continuation needs a HookedModel, skip_layers=True and every "
                             "component at the last token (@-1)")
        n_layers = model.cfg.n_layers if isinstance(model, HookedModel) else 0
        resid_names = sorted({f"blocks.{layer}.hook_resid_pre" for layer, _, _ in groups if layer}
                             | {f"blocks.{layer + 1}.hook_resid_pre" for layer, _, confined in groups
                                if confined and layer + 1 < n_layers})
        want_kv = generative or any(start is not None for _, start, _ in groups)
        report("base run", 0, 1)
        resid_last = {f"blocks.{layer}.hook_resid_pre" for layer, start, _ in groups if start == LAST} - {
            f"blocks.{layer}.hook_resid_pre" for layer, start, _ in groups if start != LAST} - {
            f"blocks.{layer + 1}.hook_resid_pre" for layer, _, confined in groups if confined}
        y_base, base_cache, kv, base_last = _run_batched(model, base, resid_names, outcome, want_kv=want_kv,
                                                         last_only=resid_last, max_bytes=max_bytes, need_kv=True)
        report("base run", 1, 1)
        y = torch.empty(len(pairs), len(components), dtype=y_base.dtype)
        chunks = []
        for key, idx in groups.items():
            layer, start, confined = key if kv is not None else (key[0], None, False)
            rows = _chunk_rows(model, base, start, generative, max_rows, max_bytes)
            comp_step = min(len(idx), rows)
            pair_step = max(1, rows // comp_step)
            chunks += [((layer, start, confined), idx[c : c + comp_step], lo, min(lo + pair_step, len(pairs)))
                       for c in range(0, len(idx), comp_step) for lo in range(0, len(pairs), pair_step)]
        report("patching", 0, len(chunks))
        for n, ((layer, start, confined), idx, lo, hi) in enumerate(chunks):
            comps = [components[i] for i in idx]
            out = _patch_chunk(model, base, source, pairs[lo:hi], comps, src_cache, base_cache, layer, start,
                               kv, outcome, y_base if confined else None, src_at=src_last, base_at=base_last)
            y[lo:hi, idx] = out.reshape(len(idx), hi - lo).T
            report("patching", n + 1, len(chunks))
    release_memory()
    return PatchRun(y, y_base, y_src)


def _start_position(c: Component) -> int | None:
    """Where a component's patch starts: LAST (every unit at the last token), the first fixed position, or None."""
    positions = [u.position for u in c.units]
    if all(p == LAST for p in positions):
        return LAST
    if any(p is None or p == LAST for p in positions):
        return None
    return min(positions)  # type: ignore[type-var]


_CONFINED = ("attn.hook_z", "hook_attn_out", "hook_resid_mid", "ln2.hook_normalized", "mlp.hook_pre",
             "mlp.hook_post", "hook_mlp_out", "hook_resid_post")
"""Hook points inside a block after its attention has mixed positions: a patch there at position p changes the
block's output at p only."""


def _confined(c: Component, layer: int, start: int | None) -> bool:
    """All units in block `layer`, at fixed position `start`, where the block's output changes at `start` only."""
    return start is not None and start != LAST and all(
        u.position == start and u.hook.startswith(f"blocks.{layer}.") and u.hook.endswith(_CONFINED)
        for u in c.units)


def _groups(components: Sequence[Component], model: HookedModel | None, base: Prepared
            ) -> dict[tuple[int, int | None, bool], list[int]]:
    """Component indices grouped by where their forward may start: (layer, position or LAST or None, whether
    the patch stays confined to its position through its own block)."""
    groups: dict[tuple[int, int | None, bool], list[int]] = {}
    n_layers = model.cfg.n_layers if model is not None else 0
    first_last = int(base.last.min()) if base.last is not None else 0
    for i, c in enumerate(components):
        layer = c.first_layer(model) if model is not None else None  # a feature: the block its dictionary reads
        start = _start_position(c) if model is not None and base.last is not None else None
        if start is not None and start != LAST and not 0 < start <= first_last:
            start = None  # position 0 saves nothing; past some row's last token the window would miss it
        first = layer if layer is not None and 0 < layer < n_layers else 0
        groups.setdefault((first, start, first == layer and _confined(c, first, start)), []).append(i)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], -2 if kv[0][1] is None else kv[0][1], kv[0][2])))


def _run_cached(model: Runnable, inputs: Prepared, names: list[str], outcome: Outcome, *, want_kv: bool
                ) -> tuple[Tensor, dict, KV | None]:
    index = torch.arange(len(inputs))
    if isinstance(model, HookedModel):
        if isinstance(outcome, Continuation) and not fits_window(model, inputs.x.shape[1] + outcome.n_tokens):
            raise InputError(f"outcome: a greedy continuation of {outcome.n_tokens} tokens after inputs of "
                             f"{inputs.x.shape[1]} tokens passes the model's sliding attention window "
                             f"({sliding_window(model)}); use shorter inputs or fewer continuation tokens")
        logits, cache, kv = base_run(model, inputs.x, inputs.last, names, want_kv)  # type: ignore[arg-type]
        if isinstance(outcome, Continuation):
            if kv is None:
                raise InputError("outcome: a greedy continuation needs a model that returns its key/value cache")
            tokens = continue_base(model, logits, kv, inputs.last, outcome.n_tokens)  # type: ignore[arg-type]
            return outcome.score_tokens(tokens, index).float(), cache, kv
        return outcome(logits, index).float(), cache, kv
    out, cache = model.run_with_cache(inputs.x, names=names)
    return outcome(out, index).float(), cache, None  # type: ignore[arg-type]


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc's `malloc_trim`; nothing elsewhere). glibc keeps what a stage
    freed, and raises its mmap threshold after large frees, so without this the activations of the base and
    source runs stay in the resident set through the patching and count in the peak."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    if trim is not None:
        trim(0)


def _shifted(outcome: Outcome, lo: int) -> Outcome:
    """The outcome of a row batch starting at row `lo`: per-row targets are looked up by global row index."""
    if lo == 0:
        return outcome
    if isinstance(outcome, Continuation):
        return Continuation(outcome.n_tokens, lambda tokens, index: outcome.score_tokens(tokens, index + lo))
    return lambda out, index: outcome(out, index + lo)


def _run_batched(model: Runnable, inputs: Prepared, names: list[str], outcome: Outcome, *, want_kv: bool,
                 last_only: set[str], max_bytes: int, need_kv: bool = False
                 ) -> tuple[Tensor, dict[str, Tensor], KV | None, dict[str, Tensor | None]]:
    """`_run_cached` in row batches that fit `max_bytes`, keeping of each hook in `last_only` only each row's last
    token (`[N, 1, ...]`; with `need_kv`, only where the keys and values came back, since a patched forward
    without them runs whole sequences). Also returns, per hook, the positions to read each row's last token at:
    zeros for a kept last token, `inputs.last` otherwise."""
    if not isinstance(model, HookedModel) or len(inputs) == 0:
        y, cache, kv = _run_cached(model, inputs, names, outcome, want_kv=want_kv)
        return y, cache, kv, {name: inputs.last for name in names}
    n, width = inputs.x.shape[0], inputs.x.shape[1]
    cfg = model.cfg
    per_row = 4 * (3 * cfg.d_vocab + width * (2 * cfg.n_layers * cfg.n_kv_heads * cfg.d_head + len(names) * max(
        cfg.d_model, cfg.n_heads * cfg.d_head) + 8 * cfg.d_model + 4 * cfg.d_mlp + 2 * cfg.n_heads * width))
    step = max(1, min(n, max_bytes // per_row))
    ys: list[Tensor] = []
    parts: dict[str, list[Tensor]] = {name: [] for name in names}
    kvs: list[KV | None] = []
    for lo in range(0, n, step):
        rows = Prepared(inputs.x[lo : lo + step], inputs.last[lo : lo + step])  # type: ignore[index]
        y, cache, kv = _run_cached(model, rows, names, _shifted(outcome, lo), want_kv=want_kv)
        shrink = last_only if kv is not None or not need_kv else set()
        for name in names:
            t = cache.pop(name)
            parts[name].append(t[torch.arange(len(rows)), rows.last][:, None] if name in shrink
                               and t.shape[0] == len(rows) else t)
        ys.append(y)
        kvs.append(kv)
    cache = {name: torch.cat(ts) if all(t.shape[0] == min(step, n - i * step) for i, t in enumerate(ts)) else ts[0]
             for name, ts in parts.items()}  # a hook shared by every row (batch size 1) stays as it came
    kv_all = None
    if all(kv is not None for kv in kvs):
        kv_all = [(torch.cat([kv[layer][0] for kv in kvs]), torch.cat([kv[layer][1] for kv in kvs]))  # type: ignore
                  for layer in range(len(kvs[0]))]  # type: ignore[arg-type]
    release_memory()
    shrunk = last_only if kv_all is not None or not need_kv else set()
    where = {name: torch.zeros_like(inputs.last) if name in shrunk and cache[name].shape[0] == n else inputs.last
             for name in names}
    return torch.cat(ys), cache, kv_all, where


def _chunk_rows(model: Runnable, base: Prepared, start: int | None, retain: bool, max_rows: int,
                max_bytes: int) -> int:
    """Rows per patched forward: `max_rows`, or fewer where their logits (and the outcome's copies of them),
    activations over the window's positions and one layer's gathered keys and values (every layer's when a
    continuation keeps them) would pass `max_bytes`."""
    if not isinstance(model, HookedModel):
        return max_rows
    cfg, width = model.cfg, base.x.shape[1]
    positions = 1 if start == LAST else width - (start or 0)
    kv_row = 2 * 2 * width * cfg.n_kv_heads * cfg.d_head * (cfg.n_layers if retain else 1)
    per_row = 4 * (3 * cfg.d_vocab + positions * (8 * cfg.d_model + 4 * cfg.d_mlp + 2 * cfg.n_heads * width) + kv_row)
    return max(1, min(max_rows, max_bytes // per_row))


def _window(model: HookedModel, base: Prepared, start: int | None, kv: KV | None, b_idx: Tensor, first_layer: int,
            *, length: int | None = None, retain: bool = False) -> Window:
    """`lazy_window` on the base rows `b_idx`: one layer's gathered keys and values alive at a time."""
    return lazy_window(model, base.x, base.last, start, kv, b_idx, first_layer, length=length,  # type: ignore[arg-type]
                       retain=retain)


def _check_shapes(components: Sequence[Component], base: Prepared, source: Prepared, cache: dict) -> None:
    for c in components:
        for u in c.units:
            if u.position == LAST:
                if base.last is None:
                    raise InputError(f"component {c.label}: position @-1 (last token) needs token inputs")
            elif u.position is None and base.x.shape[1:] != source.x.shape[1:]:
                raise InputError(f"component {c.label}: patching all positions needs base and source inputs of "
                                 f"the same length (got {tuple(base.x.shape)} and {tuple(source.x.shape)}); "
                                 "patch at a position (@P, or @-1 for the last token)")
            elif u.position is not None and u.position >= min(base.x.shape[1], source.x.shape[1]):
                raise InputError(f"component {c.label}: position {u.position} is past the inputs' length")
            act = cache.get(u.hook)
            if act is None:
                raise InputError(f"component {c.label}: hook {u.hook!r}: the forward pass never reached it")
            if act.shape[0] != len(source):
                raise InputError(f"component {c.label}: {u.hook} is shared by every row (batch size "
                                 f"{act.shape[0]}); patch hook_embed or a residual stream instead")
            if u.index is not None:
                dim = 2 if u.kind == "head" else act.ndim - 1
                if u.index >= act.shape[dim]:
                    raise InputError(f"component {c.label}: index {u.index} out of range for {u.hook} "
                                     f"(size {act.shape[dim]})")


def _select(unit: Unit, rows: Tensor, last: Tensor | None, offset: int = 0) -> tuple[Any, ...]:
    """Index into an activation `[rows, pos, ...]` (or `[rows, ...]`) selecting `unit` in the given rows;
    `last [rows]` are the rows' last-token positions and `offset` the first position the tensor holds."""
    idx: list[Any] = [rows]
    if unit.position is not None:
        idx.append(last[rows] if unit.position == LAST else unit.position - max(offset, 0))  # type: ignore[index]
    if unit.index is not None:
        if unit.kind == "head":
            idx.extend([slice(None)] * (2 - len(idx)))
            idx.append(unit.index)
        else:
            idx.extend([Ellipsis, unit.index])
    return tuple(idx)


def _patch_chunk(model: Runnable, base: Prepared, source: Prepared, chunk: Tensor, comps: list[Component],
                 src_cache: dict, base_cache: dict, layer: int, start: int | None, kv: KV | None,
                 outcome: Outcome, y_base: Tensor | None = None, *, src_at: dict[str, Tensor | None],
                 base_at: dict[str, Tensor | None]) -> Tensor:
    """Outcomes `[K_chunk * P_chunk]` (component-major) of one stacked forward.

    With `y_base` (a confined group), block `layer` runs at position `start` alone and the later blocks from
    `start` on, since the block's output changes at `start` only.
    """
    n_pairs = len(chunk)
    b_idx = chunk[:, 0].repeat(len(comps))
    s_idx = chunk[:, 1].repeat(len(comps))
    by_hook: dict[str, list[tuple[Unit, Tensor]]] = {}
    for k, c in enumerate(comps):
        local = torch.arange(k * n_pairs, (k + 1) * n_pairs)
        for u in c.units:
            by_hook.setdefault(u.hook, []).append((u, local))
    if isinstance(model, HookedModel):
        generative = isinstance(outcome, Continuation)
        win = _window(model, base, start, kv, b_idx, 0 if generative else layer,
                      length=1 if y_base is not None else None, retain=generative)
        base_last, offset = win.local_last, win.offset
    else:
        base_last, offset = (base.last[b_idx] if base.last is not None else None), 0

    def make(name: str) -> Callable[..., Tensor]:
        src, src_rows_last = src_cache[name], src_at[name]

        def fn(t: Tensor, *, hook: HookPoint) -> Tensor:
            t = t.clone()
            for u, local in by_hook[name]:
                t[_select(u, local, base_last, offset)] = src[_select(u, s_idx[local], src_rows_last)].to(t.dtype)
            return t

        return fn

    hooks = [(name, make(name)) for name in by_hook]
    if not isinstance(model, HookedModel):
        return outcome(model.run_with_hooks(base.x[b_idx], hooks), b_idx).float()  # type: ignore[arg-type]
    resid = None
    if layer > 0:
        name = f"blocks.{layer}.hook_resid_pre"
        resid = win.take(base_cache[name][b_idx], base_at[name][b_idx])  # type: ignore[index]
    if y_base is not None:
        return _confined_forward(model, base, b_idx, hooks, layer, start, kv, win, resid, base_cache, outcome,
                                 y_base)
    logits = run_window(model, win.ids, win.kwargs, first_layer=layer, resid=resid, last=win.local_last, hooks=hooks)
    if isinstance(outcome, Continuation):
        return _continue(model, base, b_idx, win, kv, layer, logits[:, 0], outcome)  # type: ignore[arg-type]
    return outcome(logits[:, 0], b_idx).float()


def _continue(model: HookedModel, base: Prepared, b_idx: Tensor, win: Window, kv: KV, layer: int, logits: Tensor,
              outcome: Continuation) -> Tensor:
    """Greedy-decode after a patched last-token window; the blocks it skipped get the base's keys/values."""
    cache, last = win.kwargs[cache_keyword(model.hf)], base.last[b_idx]  # type: ignore[index]
    for lay in range(layer):  # unchanged by the patch: the base's keys/values of the last token
        k, v = kv[lay]
        cache.update(k[b_idx, :, last][:, :, None], v[b_idx, :, last][:, :, None], lay)
    tokens = greedy_decode(model, logits, cache, win.kwargs["attention_mask"], last + 1, outcome.n_tokens)
    return outcome.score_tokens(tokens, b_idx).float()


def _confined_forward(model: HookedModel, base: Prepared, b_idx: Tensor, hooks: list, layer: int, start: int,
                      kv: KV, win: Window, resid: Tensor | None, base_cache: dict, outcome: Outcome,
                      y_base: Tensor) -> Tensor:
    """Block `layer` at position `start` alone (from `resid`, its input there), then blocks `layer + 1..` from
    `start` on."""
    if layer + 1 == model.cfg.n_layers:  # only rows whose last token is the patched one can change
        logits = run_window(model, win.ids, win.kwargs, first_layer=layer, resid=resid,
                            last=torch.zeros_like(b_idx), hooks=hooks)
        y = outcome(logits[:, 0], b_idx).float()
        return torch.where(base.last[b_idx] == start, y, y_base[b_idx])  # type: ignore[index]
    out = run_window(model, win.ids, win.kwargs, first_layer=layer, stop_layer=layer + 1, resid=resid, hooks=hooks)
    rest = _window(model, base, start, kv, b_idx, layer + 1)
    after = base_cache[f"blocks.{layer + 1}.hook_resid_pre"][b_idx][:, start:].clone()
    after[:, 0] = out[:, 0]
    logits = run_window(model, rest.ids, rest.kwargs, first_layer=layer + 1, resid=after, last=rest.local_last)
    return outcome(logits[:, 0], b_idx).float()
