"""White-box language models: training CRATE (Bai & Ma 2024) and comparing its neurons with GPT's.

CRATE itself is a model family of the spine (`lmscope.model.crate`: its HF classes and adapter, registered
with transformers' Auto classes there); its names are re-exported here for code that imports them from
`lmscope.whitebox`.
"""

from __future__ import annotations

from lmscope.model.crate import ISTA, MSSA, CrateAdapter, CrateBlock, CrateForCausalLM, CrateModel, build_crate
from lmscope.model.crate_config import CrateConfig

__all__ = ["ISTA", "MSSA", "CrateAdapter", "CrateBlock", "CrateConfig", "CrateForCausalLM", "CrateModel",
           "build_crate"]
