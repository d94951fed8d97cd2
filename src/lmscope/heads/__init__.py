"""Attention-head analysis: successor heads (Gould et al. 2023) and the standard head detectors.

`succession_scores(model)` scores every head's OV circuit on ordinal tasks in one batched computation, each
head on the embedding that reaches it (`layer_embeddings`), with each layer's input baseline beside it and
pairs/dropped items per task; `greater_than_bias` measures a head's preference for later items;
`detect_heads(model)` gives previous-token, duplicate-token, induction and copying scores for every head.
Weight-based scores read `W_U` through the final norm by default (`fold_ln=True`, see `lmscope.heads.ov`).
"""

from lmscope.heads.detectors import (
    HeadScores,
    copying_score,
    detect_heads,
    duplicate_token_score,
    induction_score,
    previous_token_score,
)
from lmscope.heads.ov import unembedding
from lmscope.heads.succession import (
    MIN_PAIRS,
    MODES,
    SuccessionResult,
    effective_embeddings,
    greater_than_bias,
    input_mode,
    layer_embeddings,
    ov_logits,
    succession_scores,
)

__all__ = [
    "MIN_PAIRS",
    "MODES",
    "HeadScores",
    "SuccessionResult",
    "copying_score",
    "detect_heads",
    "duplicate_token_score",
    "effective_embeddings",
    "greater_than_bias",
    "induction_score",
    "input_mode",
    "layer_embeddings",
    "ov_logits",
    "previous_token_score",
    "succession_scores",
    "unembedding",
]
