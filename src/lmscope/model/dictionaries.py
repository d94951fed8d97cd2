"""Dictionaries attached to a HookedModel: their feature activations become hook points like any other.

    model.attach_dictionary("runs/tc1", transcoder)
    _, cache = model.run_with_cache(text, names=["runs/tc1.hook_sae_acts_post"])   # z [batch, pos, d_sae]
    model.run_with_hooks(text, hooks=ZeroAblation("dict:runs/tc1:7").hooks())        # ablate feature 7

An attached dictionary (SAE or transcoder; anything with `cfg.hook_name`, `cfg.hook_name_out`, `encode`,
`decode`, as `lmscope.dictionary.Dictionary`) adds the hook point `<name>.hook_sae_acts_post`, SAELens's name
for the feature activations. It is computed only when that point is hooked: `z = encode(x)` of the activation
`x` at `hook_name` (a transcoder's after the hooks on `hook_name` have run), then the hooks on the feature point
run on `z`. The model's own activation is never replaced by the reconstruction (the "error term" convention of
`lmscope.dictionary.splice`): with no feature edited the output is exactly the model's; an edit `z -> z'` adds
`decode(z') - decode(z)` (`(z' - z) @ W_dec`, exactly zero where no latent changed) to the activation at
`hook_name_out`, before the hooks on that name run. An SAE, whose input and output are one hook point, reads and
edits it before the hooks on that name run, so they (and a cache of it) see the edited activation.

Gradients: the dictionary reads its input detached, so gradients upstream flow through the model's own
computation only; with autograd on, `z` requires grad and is wired in with a zero edit, so `d output / d z =
W_dec` (what attribution patching of a feature needs) and the values stay the model's. This module does not
import `lmscope.dictionary`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from lmscope.errors import InputError
from lmscope.model.hookpoints import HookPoint

FEATURE_POINT = "hook_sae_acts_post"
"""The suffix of an attached dictionary's feature hook point (`<name>.hook_sae_acts_post`)."""

HookFn = Callable[..., Tensor | None]


class Attachable(Protocol):
    """What attaching reads from a dictionary: `cfg.hook_name`, `cfg.hook_name_out`, `encode`, `decode`."""

    cfg: Any

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...


def feature_hook(name: str) -> str:
    """The feature hook point of the dictionary attached (or to be attached) under `name`."""
    return f"{name}.{FEATURE_POINT}"


def dictionary_name(hook_name: str) -> str | None:
    """The dictionary name in a feature hook point's name, or None for any other hook name."""
    suffix = "." + FEATURE_POINT
    return hook_name[: -len(suffix)] if hook_name.endswith(suffix) and len(hook_name) > len(suffix) else None


@dataclass
class AttachedDictionary:
    """A dictionary attached under `name`: it reads `hook_in` and adds its edits at `hook_out`."""

    name: str
    dictionary: Attachable
    hook_in: str
    hook_out: str
    points: list[str] = field(default_factory=list)

    @classmethod
    def make(cls, name: str, dictionary: object, valid: Sequence[str],
             width: Callable[[str], int] | None = None) -> AttachedDictionary:
        """Validate `name` and `dictionary` against the model's hook names `valid` and, where the dictionary's cfg
        records `d_in`/`d_out`, against the model's widths there (`width(hook)`); one InputError line each."""
        if not isinstance(name, str) or not name or name.strip() != name:
            raise InputError(f"name: expected a non-empty dictionary name without surrounding spaces, got {name!r}")
        if name in valid or any(p.startswith(name + ".") for p in valid):
            raise InputError(f"name {name!r}: clashes with the model's own hook points; choose another name")
        cfg = getattr(dictionary, "cfg", None)
        hook_in = getattr(cfg, "hook_name", None)
        if not isinstance(hook_in, str) or not hook_in or not all(
                callable(getattr(dictionary, m, None)) for m in ("encode", "decode")):
            raise InputError(f"dictionary {name!r}: expected an SAE or transcoder with encode, decode and a cfg "
                             f"naming its hook_name, got {type(dictionary).__name__}")
        hook_out = getattr(cfg, "hook_name_out", "") or hook_in
        for role, hook in (("hook_name", hook_in), ("hook_name_out", hook_out)):
            if hook not in valid:
                raise InputError(f"dictionary {name!r}: its {role} {hook!r} is not a hook point of this model")
        for role, hook, size in (("d_in", hook_in, getattr(cfg, "d_in", None)),
                                 ("d_out", hook_out, getattr(cfg, "d_out", None))):
            if width is not None and isinstance(size, int) and size != width(hook):
                raise InputError(f"dictionary {name!r}: its {role} is {size}, but {hook} of this model is "
                                 f"{width(hook)} wide; it was made for another model")
        if valid.index(hook_out) < valid.index(hook_in):
            raise InputError(f"dictionary {name!r}: its output {hook_out!r} comes before its input {hook_in!r}")
        return cls(name, dictionary, hook_in, hook_out, [feature_hook(name)])  # type: ignore[arg-type]

    def hooks(self, fns: dict[str, list[HookFn]], point: HookPoint) -> tuple[HookFn, HookFn | None]:
        """The reader to run last on `hook_in` and the writer to run first on `hook_out` (None for an SAE,
        whose reader adds the edit itself), for the hook functions `fns` on this dictionary's points."""
        feature_fns = fns.get(self.points[0], [])
        pending: dict[str, Tensor] = {}
        same = self.hook_in == self.hook_out

        def read(t: Tensor, *, hook: HookPoint) -> Tensor | None:
            z = _encode(self.dictionary, t)
            if torch.is_grad_enabled() and not z.requires_grad:
                z.requires_grad_(True)  # a root of the graph, so that d output / d z exists (= W_dec)
            z_new, changed = z, False
            for fn in feature_fns:
                out = fn(z_new, hook=point)
                if out is not None:
                    if not isinstance(out, Tensor) or out.shape != z.shape:
                        got = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
                        raise InputError(f"hook on {point.name!r} returned {got}; expected a tensor of shape "
                                         f"{tuple(z.shape)} or None")
                    z_new, changed = out, True
            if not changed and not (torch.is_grad_enabled() and z_new.requires_grad):
                pending.pop("delta", None)
                return None
            delta = edit_delta(self.dictionary, z_new, z.detach()).to(device=t.device, dtype=t.dtype)
            if same:
                return _add(t, delta, self.hook_out)
            pending["delta"] = delta
            return None

        def write(t: Tensor, *, hook: HookPoint) -> Tensor | None:
            delta = pending.pop("delta", None)
            return None if delta is None else _add(t, delta, self.hook_out)

        return read, (None if same else write)


def n_features(dictionary: object) -> int:
    """How many features a dictionary has: `cfg.d_sae`, else the rows of `W_dec`."""
    d_sae = getattr(getattr(dictionary, "cfg", None), "d_sae", None)
    if isinstance(d_sae, int) and not isinstance(d_sae, bool):
        return d_sae
    w_dec = getattr(dictionary, "W_dec", None)
    if isinstance(w_dec, Tensor):
        return int(w_dec.shape[0])
    raise InputError(f"dictionary: {type(dictionary).__name__} says neither cfg.d_sae nor W_dec, so its number "
                     "of features is unknown")


def _encode(dictionary: Attachable, x: Tensor) -> Tensor:
    """`encode(x)` of the detached activation, on the dictionary's device and in its dtype."""
    params = getattr(dictionary, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    x = x.detach()
    return dictionary.encode(x if first is None else x.to(device=first.device, dtype=first.dtype))


def edit_delta(dictionary: Any, z_new: Tensor, z: Tensor) -> Tensor:
    """`decode(z_new) - decode(z)`: `(z_new - z) @ W_dec` where the dictionary has `W_dec` (exactly zero in rows
    where no latent changed, and the gradient with respect to `z_new` is `W_dec`), else the difference."""
    w_dec = getattr(dictionary, "W_dec", None)
    if isinstance(w_dec, Tensor):
        return (z_new.to(w_dec.dtype) - z.to(w_dec.dtype)) @ w_dec
    return dictionary.decode(z_new) - dictionary.decode(z)


def _add(t: Tensor, delta: Tensor, hook_out: str) -> Tensor:
    if delta.shape != t.shape:
        raise InputError(f"dictionary edit: its decoder writes shape {tuple(delta.shape)} but {hook_out!r} has "
                         f"{tuple(t.shape)}; the dictionary does not fit this hook point")
    return t + delta
