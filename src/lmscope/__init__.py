"""lmscope: neuron-, feature- and circuit-level interpretability for Hugging Face causal LMs.

`HookedModel`, `Unit` and `UnitSet` are imported lazily so that light subpackages (data, report) do not
pull in torch and transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmscope.errors import InputError, LmscopeError
from lmscope.version import __version__

if TYPE_CHECKING:
    from lmscope.model.hooked import HookedModel
    from lmscope.model.units import Unit, UnitSet

__all__ = ["HookedModel", "InputError", "LmscopeError", "Unit", "UnitSet", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "HookedModel":
        from lmscope.model.hooked import HookedModel

        return HookedModel
    if name in ("Unit", "UnitSet"):
        from lmscope.model import units

        return getattr(units, name)
    raise AttributeError(f"module 'lmscope' has no attribute {name!r}")
