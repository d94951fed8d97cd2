"""Components: what a patching sweep or a mediation analysis intervenes on, and models it can run.

A `Component` is one or more units (`lmscope.model.units`) patched together under one label: a head
(`blocks.3.attn:2`), an MLP's output (`blocks.1.hook_mlp_out`), the residual stream at a position
(`blocks.2.hook_resid_pre@4`), chosen neurons, features of a dictionary attached to the model
(`dict:<path>:7@-1`; `lmscope.dictionary.attach.attach_dictionaries`), or "everything" (several units at once).
Position `-1`
means each row's last real token (right padding differs per row), which is where next-token outcomes live.

Any object with `run_with_cache(inputs, names=..., return_logits=...)` and `run_with_hooks(inputs, hooks=...)`
can be analysed (`Runnable`): `HookedModel` does, and so does `HookedModule` (`lmscope.model.toy`, re-exported
here), which wraps a plain torch module whose named submodules are hook points (e.g. a linear structural
causal model).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lmscope.errors import InputError
from lmscope.model.hookpoints import layer_of
from lmscope.model.toy import HookedModule, Runnable
from lmscope.model.units import Unit

__all__ = ["COMPONENT_GROUPS", "LAST", "Component", "HookedModule", "Runnable", "as_components",
           "standard_components"]

LAST = -1
"""Unit position meaning "each row's last real token"."""

COMPONENT_GROUPS = ("heads", "mlp", "resid", "attn", "neurons")


@dataclass(frozen=True)
class Component:
    """Units patched together; `label` names the component in results (the unit string for one unit)."""

    label: str
    units: tuple[Unit, ...]

    @classmethod
    def of(cls, spec: str | Unit | Component | Iterable[str | Unit], label: str | None = None) -> Component:
        """A component from a unit string/Unit (itself), or an iterable of them (patched together)."""
        if isinstance(spec, Component):
            return spec
        if isinstance(spec, str | Unit):
            unit = Unit.parse(spec) if isinstance(spec, str) else spec
            return cls(label or str(unit), (unit,))
        units = tuple(Unit.parse(u) if isinstance(u, str) else u for u in spec)
        if not units:
            raise InputError("component: expected at least one unit")
        return cls(label or "+".join(str(u) for u in units), units)

    @property
    def hooks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(u.hook for u in self.units))

    @property
    def layer(self) -> int | None:
        """The earliest block any unit sits in (None when a unit sits outside the blocks)."""
        return self.first_layer()

    def first_layer(self, model: object = None) -> int | None:
        """`layer`, asking `model.hook_layer` where it has one: a dictionary feature sits in the block its
        dictionary reads (a HookedModel knows it; its hook name does not say)."""
        where = getattr(model, "hook_layer", None)
        layers = [where(u.hook) if callable(where) else layer_of(u.hook) for u in self.units]
        return None if any(x is None for x in layers) else min(layers)  # type: ignore[type-var]


def as_components(specs: Iterable[str | Unit | Component | Iterable[str | Unit]]) -> list[Component]:
    """Components from a list of unit strings, Units, Components or groups of units; refuse duplicates."""
    comps = [Component.of(s) for s in specs]
    if not comps:
        raise InputError("components: expected at least one component")
    labels = [c.label for c in comps]
    dup = next((x for x in labels if labels.count(x) > 1), None)
    if dup is not None:
        raise InputError(f"components: {dup!r} appears twice")
    return comps


def standard_components(n_layers: int, n_heads: int, groups: str | Sequence[str] = ("heads", "mlp", "resid"), *,
                        position: int | None = LAST, neurons: Sequence[str] = ()) -> list[Component]:
    """Every head (`blocks.l.attn:h`), MLP output, attention output and residual stream (`hook_resid_pre`),
    per layer, at `position` (LAST: each row's last token; None: all positions); `neurons` adds unit strings.

    `groups` is a comma-separated string or a list drawn from heads, mlp, attn, resid, neurons.
    """
    if isinstance(groups, str):
        groups = [g.strip() for g in groups.split(",") if g.strip()]
    unknown = [g for g in groups if g not in COMPONENT_GROUPS]
    if unknown or not groups:
        raise InputError(f"components: got {unknown[0] if unknown else 'nothing'!r}, expected a comma-separated "
                         f"list of {', '.join(COMPONENT_GROUPS)}")
    if "neurons" in groups and not neurons:
        raise InputError("components: 'neurons' needs the neuron units (e.g. blocks.1.mlp.hook_post:7)")
    at = "" if position is None else f"@{position}"
    specs: list[str] = []
    for layer in range(n_layers):
        if "resid" in groups:
            specs.append(f"blocks.{layer}.hook_resid_pre{at}")
        if "heads" in groups:
            specs.extend(f"blocks.{layer}.attn:{h}{at}" for h in range(n_heads))
        if "attn" in groups:
            specs.append(f"blocks.{layer}.hook_attn_out{at}")
        if "mlp" in groups:
            specs.append(f"blocks.{layer}.hook_mlp_out{at}")
    if "neurons" in groups:
        specs.extend(neurons)
    return as_components(specs)
