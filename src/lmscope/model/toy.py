"""Toy models: any plain torch module made analysable by lmscope through one protocol.

`Runnable` is what the analyses need from a model: `run_with_cache(inputs, names=..., return_logits=...)` and
`run_with_hooks(inputs, hooks=...)`, with hooks following HookedModel's contract (`fn(tensor, *, hook) -> Tensor |
None`). `HookedModel` satisfies it, and so does `HookedModule`, which wraps any `nn.Module` whose named submodules
are hook points (the output of each is the activation): a linear structural causal model, a hand-built toy
network with planted mechanisms. Patching, attribution and mediation run on either unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from lmscope.model.hookpoints import HookPoint, layer_of, refuse_unknown


@runtime_checkable
class Runnable(Protocol):
    """What the patching engine needs from a model (HookedModel and HookedModule satisfy it)."""

    def run_with_cache(self, inputs: Any, names: Sequence[str] | None = None, *,
                       return_logits: bool = True) -> tuple[Tensor | None, dict[str, Tensor]]: ...

    def run_with_hooks(self, inputs: Any, hooks: Sequence[tuple[str, Callable[..., Tensor | None]]] = ()
                       ) -> Tensor | None: ...


class HookedModule:
    """A plain torch module made patchable: `points` maps hook names to submodules whose output is the hook.

    The module is called as `module(inputs)`; hooks follow HookedModel's contract
    (`fn(tensor, *, hook) -> Tensor | None`), so every analysis in `lmscope.causal` runs on it unchanged.
    """

    def __init__(self, module: nn.Module, points: Mapping[str, nn.Module]) -> None:
        self.module = module.eval()
        self.points = dict(points)

    @property
    def hook_names(self) -> list[str]:
        return list(self.points)

    def _check(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self.points:
                raise refuse_unknown(name, self.hook_names)

    def run_with_hooks(self, inputs: Any, hooks: Sequence[tuple[str, Callable[..., Tensor | None]]] = ()
                       ) -> Tensor | None:
        """Run the module with `hooks` attached to the named points; they are removed on exit."""
        self._check(name for name, _ in hooks)
        handles = []
        try:
            for name, fn in hooks:
                def on_output(mod: nn.Module, args: Any, output: Tensor, fn: Any = fn, name: str = name) -> Any:
                    return fn(output, hook=HookPoint(name, layer_of(name)))

                handles.append(self.points[name].register_forward_hook(on_output))
            return self.module(inputs)
        finally:
            for handle in handles:
                handle.remove()

    def run_with_cache(self, inputs: Any, names: Sequence[str] | None = None, *,
                       return_logits: bool = True) -> tuple[Tensor | None, dict[str, Tensor]]:
        """Run once; return the output and the named activations (all points if `names` is None)."""
        names = self.hook_names if names is None else list(names)
        cache: dict[str, Tensor] = {}

        def capture(t: Tensor, *, hook: HookPoint) -> None:
            cache[hook.name] = t.detach()

        with torch.no_grad():
            out = self.run_with_hooks(inputs, [(n, capture) for n in names])
        return (out if return_logits else None), cache
