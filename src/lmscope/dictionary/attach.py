"""Attach the dictionaries that units name, so that `dict:<path>:i` acts like any neuron.

    attach_dictionaries(model, ["dict:runs/tc1:7", "blocks.0.attn:1"])   # loads runs/tc1, attaches it
    model.run_with_hooks(text, hooks=ZeroAblation("dict:runs/tc1:7").hooks())

A feature unit `dict:<path>:i` acts on the hook point `<path>.hook_sae_acts_post`, which exists once the
dictionary saved at `<path>` is attached to the model under the name `<path>` (as the unit spells it;
`lmscope.model.dictionaries` says how the features run). This reads each such dictionary from disk with
`load_dictionary`, checking that it was made with this model.
"""

from __future__ import annotations

from collections.abc import Iterable

from lmscope.dictionary.io import load_dictionary
from lmscope.errors import InputError
from lmscope.model.dictionaries import dictionary_name, feature_hook
from lmscope.model.hooked import HookedModel
from lmscope.model.units import Unit, UnitSet


def attach_dictionaries(model: HookedModel, units_or_hook_names: Iterable[Unit | str] | Unit | str, *,
                        allow_mismatch: bool = False) -> list[str]:
    """Load and attach every dictionary the units (or feature hook names `<path>.hook_sae_acts_post`) name.

    Other units and hook names are left alone; a dictionary already attached under its path is not read
    again. Returns the feature hook points of the named dictionaries, in first-mention order.
    `allow_mismatch`: a dictionary made with other weights of the same shape is used, with a warning
    (`load_dictionary`'s check), instead of refused.
    """
    if not isinstance(model, HookedModel):
        raise InputError(f"model: expected a HookedModel, got {type(model).__name__}")
    items = [units_or_hook_names] if isinstance(units_or_hook_names, Unit | str) else list(units_or_hook_names)
    paths: dict[str, None] = {}
    for item in items:
        if isinstance(item, str) and not item.startswith("dict:"):
            path = dictionary_name(item)
        else:
            unit = UnitSet.coerce(item).units[0] if isinstance(item, str | Unit) else None
            if unit is None:
                raise InputError(f"units_or_hook_names: expected unit strings, Units or hook names, got {item!r}")
            path = unit.dictionary if unit.kind == "feature" else None
        if path is not None:
            paths[path] = None
    for path in paths:
        if path not in model.dictionaries:
            model.attach_dictionary(path, load_dictionary(path, model=model, allow_mismatch=allow_mismatch))
    return [feature_hook(path) for path in paths]
