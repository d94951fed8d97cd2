"""`CrateConfig`: the HF configuration of lmscope's CRATE language model (model type "crate")."""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import PretrainedConfig

ISTA_MODES = ("overcomplete", "complete")


class CrateConfig(PretrainedConfig):
    """Sizes and ISTA hyperparameters of a CRATE causal LM (Bai & Ma 2024), GPT-2-style names.

    `ista_mode="overcomplete"`: dictionary `D [n_embd, ista_expansion * n_embd]`, two ISTA steps from zero,
    output `D A2`. `ista_mode="complete"`: square `D [n_embd, n_embd]`, one step from `A0 = x`, output the
    code itself (the original CRATE block). `ista_step` is eta, `ista_lambda` is lambda.
    """

    model_type = "crate"
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
        "max_position_embeddings": "n_positions"}

    def __init__(self, vocab_size: int = 50257, n_positions: int = 1024, n_embd: int = 768, n_layer: int = 12,
                 n_head: int = 12, ista_mode: str = "overcomplete", ista_expansion: int = 4,
                 ista_step: float = 0.1, ista_lambda: float = 0.1, layer_norm_epsilon: float = 1e-5,
                 initializer_range: float = 0.02, tie_word_embeddings: bool = True, bos_token_id: int = 0,
                 eos_token_id: int = 0, pad_token_id: int | None = None, **kwargs: Any) -> None:
        if ista_mode not in ISTA_MODES:
            raise ValueError(f"ista_mode: got {ista_mode!r}, expected one of {', '.join(ISTA_MODES)}")
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.vocab_size = vocab_size
        self.n_positions = n_positions
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.n_head = n_head
        self.ista_mode = ista_mode
        self.ista_expansion = ista_expansion
        self.ista_step = ista_step
        self.ista_lambda = ista_lambda
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        # PreTrainedConfig.__init__ takes any keyword at run time (strict(accept_kwargs=True) hands the ones that
        # are not its fields to __post_init__), but its dataclass_transform signature lists only its own fields
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,  # type: ignore[call-arg]
                         tie_word_embeddings=tie_word_embeddings, **kwargs)

    @property
    def d_code(self) -> int:
        """Width of the sparse code (the block's neurons): `ista_expansion * n_embd`, or `n_embd` if complete."""
        return self.n_embd * (self.ista_expansion if self.ista_mode == "overcomplete" else 1)
