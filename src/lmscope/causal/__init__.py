"""Causal analyses per model component: activation patching (exact, or estimated by attribution patching),
and mediation (TE, NDE, NIE) with a confounder adjusted for by stratification or entropy balancing
(Fotouhi et al. 2024).

    from lmscope.causal import mediate, patch_sweep, standard_components, lexicon_mass
"""

from lmscope.causal.attribution import attributed_effects, compare_estimates
from lmscope.causal.balance import entropy_balance
from lmscope.causal.components import LAST, Component, as_components, standard_components
from lmscope.causal.continuation import Continuation
from lmscope.causal.engine import patched_outcomes, prepare
from lmscope.causal.mediation import SCHEMES, mediate
from lmscope.causal.patching import patch_sweep
from lmscope.causal.results import MediationResult, PatchingResult
from lmscope.causal.stats import gini, localization, top_k_share
from lmscope.model.toy import HookedModule

__all__ = [
    "LAST",
    "SCHEMES",
    "Component",
    "Continuation",
    "HookedModule",
    "MediationResult",
    "PatchingResult",
    "as_components",
    "attributed_effects",
    "compare_estimates",
    "entropy_balance",
    "gini",
    "localization",
    "mediate",
    "patch_sweep",
    "patched_outcomes",
    "prepare",
    "standard_components",
    "top_k_share",
]
