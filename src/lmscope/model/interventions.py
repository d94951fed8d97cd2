"""Interventions: small composable objects that become `(hook_name, fn)` pairs for `run_with_hooks`.

    ablate = ZeroAblation(["blocks.0.attn:1", "blocks.1.mlp.hook_post:7"])
    steer = AddVector("blocks.1.hook_resid_post", v, scale=4.0)
    logits = model.run_with_hooks(text, hooks=(ablate + steer).hooks())

Units pick what is touched (see `lmscope.model.units`); a unit with a position touches only that position.
A dictionary feature (`dict:<path>:7`) is a unit like a neuron once its dictionary is attached to the model
(`lmscope.dictionary.attach.attach_dictionaries`): the edit lands on its feature activations and reaches the
model as `decode(z') - decode(z)` (`lmscope.model.dictionaries`).
Every intervention copies the activation it edits, so captured tensors elsewhere are never changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from lmscope.errors import InputError
from lmscope.model.hookpoints import HookPoint
from lmscope.model.units import Unit, UnitSet

HookPair = tuple[str, Callable[..., Tensor | None]]
Units = UnitSet | Unit | str | Sequence[Unit | str]


class Intervention:
    """Base class: `hooks()` returns the `(name, fn)` pairs; `a + b` composes (a runs first)."""

    def hooks(self) -> list[HookPair]:
        raise NotImplementedError

    def __add__(self, other: Intervention) -> Compose:
        return Compose([self, other])


@dataclass
class Compose(Intervention):
    """Several interventions applied together, in order."""

    parts: list[Intervention] = field(default_factory=list)

    def hooks(self) -> list[HookPair]:
        return [pair for part in self.parts for pair in part.hooks()]

    def __add__(self, other: Intervention) -> Compose:
        return Compose([*self.parts, other])


def _index(unit: Unit, t: Tensor, hook_name: str) -> tuple[Any, ...]:
    """The index into an activation `[batch, pos, ...]` (or a pattern `[batch, head, q, k]`) a unit selects."""
    pattern = hook_name.endswith("hook_pattern")
    idx: list[Any] = [slice(None)] * t.ndim
    if unit.position is not None:
        idx[2 if pattern else 1] = unit.position
    if unit.index is not None:
        dim = 1 if pattern else (2 if unit.kind == "head" else t.ndim - 1)
        if unit.index >= t.shape[dim]:
            raise InputError(f"unit {unit}: index {unit.index} out of range for {hook_name} "
                             f"(size {t.shape[dim]} in that dimension)")
        idx[dim] = unit.index
    return tuple(idx)


class _UnitEdit(Intervention):
    """Shared plumbing: group units by hook and edit a copy of each activation."""

    def __init__(self, units: Units) -> None:
        self.units = UnitSet.coerce(units)
        if not len(self.units):
            raise InputError("units: expected at least one unit")

    def edit(self, t: Tensor, idx: tuple[Any, ...], hook: HookPoint) -> None:
        raise NotImplementedError

    def hooks(self) -> list[HookPair]:
        pairs: list[HookPair] = []
        for name, units in self.units.by_hook().items():
            def fn(t: Tensor, *, hook: HookPoint, units: list[Unit] = units) -> Tensor:
                out = t.clone()
                for u in units:
                    self.edit(out, _index(u, out, hook.name), hook)
                return out

            pairs.append((name, fn))
        return pairs


class ZeroAblation(_UnitEdit):
    """Set the chosen units to zero."""

    def edit(self, t: Tensor, idx: tuple[Any, ...], hook: HookPoint) -> None:
        t[idx] = 0


class MeanAblation(_UnitEdit):
    """Set the chosen units to their mean; `means[hook]` has the per-token shape (e.g. `[d_mlp]`)."""

    def __init__(self, units: Units, means: dict[str, Tensor]) -> None:
        super().__init__(units)
        missing = [h for h in self.units.by_hook() if h not in means]
        if missing:
            raise InputError(f"means: no mean for hook point {missing[0]!r}; compute it with compute_means()")
        self.means = means

    def edit(self, t: Tensor, idx: tuple[Any, ...], hook: HookPoint) -> None:
        full = self.means[hook.name].to(t.dtype).expand(t.shape)
        t[idx] = full[idx]


class Patch(_UnitEdit):
    """Activation patching: copy the chosen units from another run's cache (same shape as this run)."""

    def __init__(self, units: Units, source_cache: dict[str, Tensor]) -> None:
        super().__init__(units)
        missing = [h for h in self.units.by_hook() if h not in source_cache]
        if missing:
            raise InputError(f"source_cache: hook point {missing[0]!r} was not cached in the source run")
        self.source = source_cache

    def edit(self, t: Tensor, idx: tuple[Any, ...], hook: HookPoint) -> None:
        src = self.source[hook.name]
        if src.shape != t.shape:
            raise InputError(f"patch {hook.name}: source shape {tuple(src.shape)} differs from the base run's "
                             f"{tuple(t.shape)}; use inputs of the same length")
        t[idx] = src[idx].to(t.dtype)


class AddToUnits(_UnitEdit):
    """Steering by units: add `value` to each chosen unit (a neuron's or a feature's activation; every element
    of a head or a whole hook point), at every position or at the unit's own."""

    def __init__(self, units: Units, value: float) -> None:
        super().__init__(units)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"value: expected a number to add, got {value!r}")
        self.value = float(value)

    def edit(self, t: Tensor, idx: tuple[Any, ...], hook: HookPoint) -> None:
        t[idx] += self.value


@dataclass
class AddVector(Intervention):
    """Steering: add `scale * vector` (`[d]`) to a hook point, at all positions or the given ones."""

    hook_name: str
    vector: Tensor
    scale: float = 1.0
    positions: Sequence[int] | None = None

    def hooks(self) -> list[HookPair]:
        def fn(t: Tensor, *, hook: HookPoint) -> Tensor:
            if self.vector.shape[-1] != t.shape[-1]:
                raise InputError(f"vector: size {self.vector.shape[-1]} does not match {hook.name} "
                                 f"(last dimension {t.shape[-1]})")
            delta = (self.scale * self.vector).to(t.dtype)
            if self.positions is None:
                return t + delta
            out = t.clone()
            out[:, list(self.positions)] += delta
            return out

        return [(self.hook_name, fn)]


@dataclass
class Replace(Intervention):
    """Replace a hook point's activation with `fn(activation)` (any shape-preserving function)."""

    hook_name: str
    fn: Callable[[Tensor], Tensor]

    def hooks(self) -> list[HookPair]:
        return [(self.hook_name, lambda t, *, hook: self.fn(t))]


def compute_means(model: object, inputs: object, hook_names: Sequence[str]) -> dict[str, Tensor]:
    """Per-token mean of each hook point over all real (unpadded) tokens of `inputs`.

    Batch-and-position means, shaped like one token's activation (`[d]`, `[head, d_head]`, ...).
    """
    from lmscope.model.hooked import HookedModel

    if not isinstance(model, HookedModel):
        raise InputError("model: expected a HookedModel")
    batch = model.to_tokens(inputs)  # type: ignore[arg-type]
    _, cache = model.run_with_cache(batch.input_ids, names=list(hook_names), return_logits=False)
    mask = batch.attention_mask.bool()
    means: dict[str, Tensor] = {}
    for name, act in cache.items():
        if name.endswith("hook_pattern"):
            raise InputError(f"{name}: mean ablation of attention patterns is not supported")
        means[name] = act[mask].mean(dim=0)
    return means

