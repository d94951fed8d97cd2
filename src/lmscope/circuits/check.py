"""Does the circuit carry the computation? Keep only its features, zero-ablate the rest, re-measure the target.

Every MLP with a transcoder is replaced by the transcoder, with only the features in `keep` (per layer
and position) left on, recomputed from each layer's actual (already edited) input, plus the transcoder's
error term frozen at its value in the clean run (in the graph it is a constant leaf, like a bias). With
everything kept the model is unchanged; with nothing kept every transcoder feature is gone. The fraction
recovered is `(circuit − none) / (clean − none)` of the target metric; `without` (every feature but the
circuit's kept) says how much the rest carries alone.

Zero-ablating most features shrinks the residual stream, and the final LayerNorm then scales whatever is
left up, so the live check can overshoot. The `*_frozen` figures repeat it with every LayerNorm scale and
attention pattern frozen at the clean run, the frame the attributions are computed in (features still
switch on and off through their ReLUs).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lmscope.circuits.targets import Target, logit_metric
from lmscope.circuits.trace import FrozenNorm
from lmscope.dictionary.modules import Dictionary
from lmscope.model.hooked import HookedModel
from lmscope.model.hookpoints import HookPoint
from lmscope.model.inputs import Inputs


@dataclass(frozen=True)
class Recovery:
    """The target metric clean, with only the circuit's features, with none, and with all but the circuit's;
    live and with norms and attention patterns frozen (`*_frozen`)."""

    clean: float
    circuit: float
    none: float
    without: float | None  # None when not asked for (`recovery(..., without=False)`)
    recovered: float | None  # (circuit - none) / (clean - none); None when ablating every feature does not move it
    circuit_frozen: float
    none_frozen: float
    without_frozen: float | None
    recovered_frozen: float | None
    n_features: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Clean:
    """What the clean run leaves for the edited ones: transcoder errors, norm scales, attention patterns."""

    errors: dict[int, Tensor] = field(default_factory=dict)
    norm_inputs: dict[nn.Module, Tensor] = field(default_factory=dict)
    patterns: dict[str, Tensor] = field(default_factory=dict)


@contextmanager
def _module_hooks(modules: Iterable[nn.Module], fn: Any) -> Iterator[None]:
    """Plain forward hooks on the norm modules (the spine names their outputs, not ln1's input and output)."""
    handles = [m.register_forward_hook(fn) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _norms(model: HookedModel) -> list[nn.Module]:
    n = model.cfg.n_layers
    return [*(model.adapter.ln1(layer) for layer in range(n)), *(model.adapter.ln2(layer) for layer in range(n)),
            model.adapter.ln_final()]


def _run(model: HookedModel, transcoders: Mapping[int, Dictionary], ids: Tensor, targets: Sequence[Target],
         pos: Sequence[int], keep: dict[int, Tensor] | None, clean: _Clean, frozen: bool = False) -> list[float]:
    """The target metric of each prompt in the batch `ids [B, pos]` (all of one length) with each MLP replaced by
    its transcoder keeping only `keep[layer] [B, pos, d_sae]` plus the clean error; `keep=None` is the clean run,
    which fills `clean`. `targets[b]` is read at position `pos[b]`."""
    inputs: dict[int, Tensor] = {}
    metric: dict[int, float] = {}

    def read_in(x: Tensor, *, hook: HookPoint) -> None:
        layer = int(hook.name.split(".")[1])
        inputs[layer] = x
        for b, t in enumerate(targets):
            if t.kind == "feature" and layer == t.layer:
                tc = transcoders[layer]
                metric[b] = float(tc.encode_pre(x[b, pos[b]].to(tc.W_enc.dtype))[t.feature])

    def write_out(out: Tensor, *, hook: HookPoint) -> Tensor | None:
        layer = int(hook.name.split(".")[1])
        tc = transcoders[layer]
        y_hat, z = tc(inputs[layer].to(tc.W_enc.dtype))  # [B, pos, d_out], [B, pos, d_sae]
        if keep is None:
            clean.errors[layer] = out - y_hat.to(out.dtype)
            return None
        removed = z * (~keep[layer]).to(z.dtype)
        return (y_hat - removed @ tc.W_dec).to(out.dtype) + clean.errors[layer]

    def pattern(p: Tensor, *, hook: HookPoint) -> Tensor | None:
        if keep is None:
            clean.patterns[hook.name] = p.clone()
            return None
        return clean.patterns[hook.name] if frozen else None

    def norm(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor | None:
        if keep is None:
            clean.norm_inputs[module] = args[0].detach().clone()
            return None
        if not frozen:
            return None
        f = FrozenNorm(module, clean.norm_inputs[module])
        return f.apply(args[0]).to(out.dtype)

    hooks = []
    for layer in transcoders:
        hooks += [(f"blocks.{layer}.ln2.hook_normalized", read_in), (f"blocks.{layer}.hook_mlp_out", write_out)]
    if keep is None or frozen:
        hooks += [(f"blocks.{layer}.attn.hook_pattern", pattern) for layer in range(model.cfg.n_layers)]
    with torch.inference_mode(), _module_hooks(_norms(model) if keep is None or frozen else [], norm):
        logits = model.run_with_hooks(ids, hooks=hooks)
    for b, t in enumerate(targets):
        if t.kind == "logit":
            metric[b] = float(logit_metric(logits[b], t, pos[b]))  # type: ignore[index]
    return [metric[b] for b in range(len(targets))]


def _fraction(part: float, none: float, clean: float) -> float | None:
    return (part - none) / (clean - none) if abs(clean - none) > 1e-12 else None


def recovery(model: HookedModel, transcoders: Mapping[int, Dictionary], prompt: Inputs, target: Target,
             features: Iterable[tuple[int, int, int]], *, without: bool = True) -> Recovery:
    """Splice the circuit's `features` (`(layer, feature, pos)`) back in alone; see the module docstring.
    `without=False` skips the two runs with every feature but the circuit's (`without*` are then None)."""
    return recovery_batch(model, transcoders, model.to_tokens(prompt).input_ids, [target], [list(features)],
                          without=without)[0]


def recovery_batch(model: HookedModel, transcoders: Mapping[int, Dictionary], ids: Tensor, targets: Sequence[Target],
                   features: Sequence[Sequence[tuple[int, int, int]]], *, without: bool = True) -> list[Recovery]:
    """`recovery` of B prompts of one length at once (`ids [B, pos]`), each with its target and features: one
    forward pass per variant for the whole batch instead of one per prompt."""
    B, n_pos = ids.shape
    pos = [t.position(n_pos) for t in targets]
    kept = {layer: torch.zeros(B, n_pos, tc.cfg.d_sae, dtype=torch.bool) for layer, tc in transcoders.items()}
    counts = [0] * B
    for b, feats in enumerate(features):
        for layer, f, p in feats:
            if layer in kept:
                kept[layer][b, p, f] = True
                counts[b] += 1
    masks = {"circuit": kept, "none": {layer: torch.zeros_like(k) for layer, k in kept.items()}}
    if without:
        masks["without"] = {layer: ~k for layer, k in kept.items()}
    state = _Clean()
    clean = _run(model, transcoders, ids, targets, pos, None, state)
    live = {k: _run(model, transcoders, ids, targets, pos, m, state) for k, m in masks.items()}
    frozen = {k: _run(model, transcoders, ids, targets, pos, m, state, frozen=True) for k, m in masks.items()}
    out = []
    for b in range(B):
        lw, fw = live.get("without"), frozen.get("without")
        out.append(Recovery(clean[b], live["circuit"][b], live["none"][b], None if lw is None else lw[b],
                            _fraction(live["circuit"][b], live["none"][b], clean[b]), frozen["circuit"][b],
                            frozen["none"][b], None if fw is None else fw[b],
                            _fraction(frozen["circuit"][b], frozen["none"][b], clean[b]), counts[b]))
    return out
