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

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lmscope.circuits.targets import Target, logit_metric
from lmscope.circuits.trace import FrozenNorm
from lmscope.dictionary.modules import Dictionary
from lmscope.heads.succession import ln1
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
    return [*(ln1(model, layer) for layer in range(n)), *(model.adapter.ln2(layer) for layer in range(n)),
            model.adapter.ln_final()]


def _run(model: HookedModel, transcoders: Mapping[int, Dictionary], ids: Tensor, target: Target, pos: int,
         keep: dict[int, Tensor] | None, clean: _Clean, frozen: bool = False) -> float:
    """The target metric with each MLP replaced by its transcoder keeping only `keep[layer] [pos, d_sae]`
    plus the clean error; `keep=None` is the clean run, which fills `clean`."""
    inputs: dict[int, Tensor] = {}
    metric: dict[str, float] = {}

    def read_in(x: Tensor, *, hook: HookPoint) -> None:
        layer = int(hook.name.split(".")[1])
        inputs[layer] = x
        if target.kind == "feature" and layer == target.layer:
            tc = transcoders[layer]
            metric["value"] = float(tc.encode_pre(x[0, pos].to(tc.W_enc.dtype))[target.feature])

    def write_out(out: Tensor, *, hook: HookPoint) -> Tensor | None:
        layer = int(hook.name.split(".")[1])
        tc = transcoders[layer]
        y_hat, z = tc(inputs[layer][0].to(tc.W_enc.dtype))  # [pos, d_out], [pos, d_sae]
        if keep is None:
            clean.errors[layer] = out[0] - y_hat.to(out.dtype)
            return None
        removed = z * (~keep[layer]).to(z.dtype)
        return (y_hat - removed @ tc.W_dec).to(out.dtype).unsqueeze(0) + clean.errors[layer]

    def pattern(p: Tensor, *, hook: HookPoint) -> Tensor | None:
        if keep is None:
            clean.patterns[hook.name] = p.clone()
            return None
        return clean.patterns[hook.name] if frozen else None

    def norm(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor | None:
        if keep is None:
            clean.norm_inputs[module] = args[0][0].detach().clone()
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
    if target.kind == "logit":
        metric["value"] = float(logit_metric(logits[0], target, pos))  # type: ignore[index]
    return metric["value"]


def _fraction(part: float, none: float, clean: float) -> float | None:
    return (part - none) / (clean - none) if abs(clean - none) > 1e-12 else None


def recovery(model: HookedModel, transcoders: Mapping[int, Dictionary], prompt: Inputs, target: Target,
             features: Iterable[tuple[int, int, int]], *, without: bool = True) -> Recovery:
    """Splice the circuit's `features` (`(layer, feature, pos)`) back in alone; see the module docstring.
    `without=False` skips the two runs with every feature but the circuit's (`without*` are then None)."""
    ids = model.to_tokens(prompt).input_ids
    n_pos = ids.shape[1]
    pos = target.position(n_pos)
    kept = {layer: torch.zeros(n_pos, tc.cfg.d_sae, dtype=torch.bool) for layer, tc in transcoders.items()}
    n = 0
    for layer, f, p in features:
        if layer in kept:
            kept[layer][p, f] = True
            n += 1
    masks = {"circuit": kept, "none": {layer: torch.zeros_like(k) for layer, k in kept.items()}}
    if without:
        masks["without"] = {layer: ~k for layer, k in kept.items()}
    state = _Clean()
    clean = _run(model, transcoders, ids, target, pos, None, state)
    live = {k: _run(model, transcoders, ids, target, pos, m, state) for k, m in masks.items()}
    frozen = {k: _run(model, transcoders, ids, target, pos, m, state, frozen=True) for k, m in masks.items()}
    return Recovery(clean, live["circuit"], live["none"], live.get("without"),
                    _fraction(live["circuit"], live["none"], clean), frozen["circuit"], frozen["none"],
                    frozen.get("without"), _fraction(frozen["circuit"], frozen["none"], clean), n)
