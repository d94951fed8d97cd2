"""Named hook points: TransformerLens names mapped onto modules of an unmodified HF model.

A `Site` says where a hook point lives: the output of a module (forward hook), the first input of a
module (forward pre-hook), or inside attention (the pattern). `view` reshapes what is captured there to
the hook point's documented shape (e.g. `[batch, pos, d_model] -> [batch, pos, head, d_head]` for
`attn.hook_z`) and `unview` reshapes a replacement back.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from lmscope.errors import InputError

SiteKind = Literal["output", "input", "pattern"]

_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class HookPoint:
    """What a hook function is told about where it runs: `hook.name`, `hook.layer` (None outside blocks)."""

    name: str
    layer: int | None


@dataclass(frozen=True)
class Site:
    """Where a hook point lives in the HF module tree."""

    kind: SiteKind
    module: nn.Module
    view: Callable[[Tensor], Tensor] | None = None
    unview: Callable[[Tensor], Tensor] | None = None


def layer_of(name: str) -> int | None:
    """The block index in a hook name, or None for names outside the blocks (`hook_embed`, `ln_final...`)."""
    match = _LAYER_RE.match(name)
    return int(match.group(1)) if match else None


def split_heads(n_heads: int) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """View `[..., n_heads * d_head]` as `[..., n_heads, d_head]`, and back."""

    def view(t: Tensor) -> Tensor:
        return t.view(*t.shape[:-1], n_heads, t.shape[-1] // n_heads)

    def unview(t: Tensor) -> Tensor:
        return t.reshape(*t.shape[:-2], t.shape[-2] * t.shape[-1])

    return view, unview


def refuse_unknown(name: object, valid: list[str]) -> InputError:
    """An InputError for a hook name the model lacks, naming the closest valid ones."""
    if not isinstance(name, str):
        return InputError(f"hook name: expected a string, got {type(name).__name__}")
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    examples = ", ".join(dict.fromkeys([valid[0], valid[-1]])) if valid else "none"
    hint = f"; closest: {', '.join(close)}" if close else f"; valid names look like {examples}"
    return InputError(f"hook name {name!r}: not a hook point of this model{hint}")
