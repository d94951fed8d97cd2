"""Architecture-independent sizes of a hooked model (TransformerLens-style names)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Sizes every analysis needs, read from the HF config by the family's adapter."""

    family: str
    model_type: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    act_fn: str
    parallel_attn_mlp: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
