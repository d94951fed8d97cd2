"""run_window on a family whose layers of another type than block 0 get their own mask (Gemma 3, Qwen2), with
the forward's own key/value cache on: every such mask is made before any block writes the cache, as the HF
forward makes it. Found on Gemma 3 270M (18 layers, a global layer every sixth): a window from layer 1 made
layer 11's mask after layer 5 had written 15 keys, so it spanned 30 keys for 15 queries."""

from __future__ import annotations

import pytest
import torch

from lmscope import HookedModel
from lmscope.model.window import run_window

TYPES = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
SMALL = {"num_hidden_layers": 4, "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 48, "vocab_size": 61, "max_position_embeddings": 64, "bos_token_id": 0,
         "eos_token_id": 0, "pad_token_id": 0, "use_cache": True}


def _model(family: str) -> HookedModel:
    torch.manual_seed(0)
    if family == "gemma3":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        hf = Gemma3ForCausalLM(Gemma3TextConfig(**SMALL, head_dim=8, sliding_window=3, layer_types=TYPES))
    else:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        hf = Qwen2ForCausalLM(Qwen2Config(**SMALL, use_sliding_window=True, sliding_window=3, layer_types=TYPES))
    return HookedModel(hf.eval())


@pytest.mark.parametrize("family", ["gemma3", "qwen2"])
@pytest.mark.parametrize("first_layer", [1, 2])
def test_window_with_the_forwards_cache_equals_the_whole_forward(family: str, first_layer: int) -> None:
    model = _model(family)
    ids = torch.randint(1, 61, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model.hf(input_ids=ids).logits
        name = f"blocks.{first_layer}.hook_resid_pre"
        _, cache = model.run_with_cache(ids, names=[name])
        out = run_window(model, ids, {}, first_layer=first_layer, resid=cache[name])
    assert out.shape == full.shape
    assert torch.equal(out, full)
