"""lmscope: neuron-, feature- and circuit-level interpretability for Hugging Face causal LMs."""

from lmscope.errors import InputError, LmscopeError
from lmscope.model.hooked import HookedModel
from lmscope.model.units import Unit, UnitSet

__version__ = "0.1.0"
__all__ = ["HookedModel", "InputError", "LmscopeError", "Unit", "UnitSet", "__version__"]
