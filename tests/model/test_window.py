"""`lmscope.model.window`: blocks run from a cached state give exactly what the whole forward gives, on every family
(their own masks and rotary embeddings per layer type, Gemma's final soft-cap), with the module tree untouched."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from lmscope import HookedModel
from lmscope.errors import InputError
from lmscope.model.window import (
    LAST,
    base_run,
    cache_keyword,
    greedy_decode,
    kv_cache,
    lazy_window,
    returned_cache,
    run_window,
    window,
)
from tiny_models import tiny_hf_model

SMALL = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 48, "vocab_size": 61, "max_position_embeddings": 64, "bos_token_id": 0,
         "eos_token_id": 0, "pad_token_id": 0}


def _hf(family: str, window_size: int = 3) -> nn.Module:
    """Two-layer random-init models; the typed families have a local layer of `window_size` and a global one, in
    the order that makes block 1's mask (and Gemma 3's rotary embedding) differ from block 0's."""
    torch.manual_seed(0)
    if family == "gemma3":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        return Gemma3ForCausalLM(Gemma3TextConfig(**SMALL, head_dim=8, sliding_window=window_size,
                                                  layer_types=["sliding_attention", "full_attention"])).eval()
    if family == "gemma2":  # final_logit_softcapping 30 by default: run_window must apply it
        from transformers import Gemma2Config, Gemma2ForCausalLM

        return Gemma2ForCausalLM(Gemma2Config(**SMALL, head_dim=8, sliding_window=window_size,
                                              layer_types=["sliding_attention", "full_attention"])).eval()
    if family == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        return Qwen2ForCausalLM(Qwen2Config(**SMALL, use_sliding_window=True, sliding_window=window_size,
                                            layer_types=["full_attention", "sliding_attention"])).eval()
    if family == "crate":
        from lmscope.model.crate import CrateForCausalLM
        from lmscope.model.crate_config import CrateConfig

        return CrateForCausalLM(CrateConfig(vocab_size=61, n_positions=64, n_embd=32, n_layer=2, n_head=4)).eval()
    return tiny_hf_model(family)


FAMILIES = ["gpt2", "gpt_neox", "llama", "gemma3", "gemma2", "qwen2", "crate"]
IDS = torch.randint(1, 61, (3, 7), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", FAMILIES)
def test_blocks_from_a_cached_residual_give_the_whole_forward(family: str) -> None:
    """Whole sequences, local windows shorter than them: block 1 must get its own layer type's mask."""
    model = HookedModel(_hf(family))
    with torch.no_grad():
        logits, cache = model.run_with_cache(IDS, names=["blocks.1.hook_resid_pre", "blocks.0.hook_resid_post"])
        from_1 = run_window(model, IDS, first_layer=1, resid=cache["blocks.1.hook_resid_pre"])
        last = torch.tensor([6, 3, 5])
        at_last = run_window(model, IDS, first_layer=1, resid=cache["blocks.1.hook_resid_pre"], last=last)
        block_0 = run_window(model, IDS, stop_layer=1)
        whole = run_window(model, IDS)
    assert torch.equal(from_1, logits) and torch.equal(whole, logits)
    # the unembedding of 3 rows rounds apart from that of 21 by float32 noise only
    torch.testing.assert_close(at_last[:, 0], logits[torch.arange(3), last], atol=1e-6, rtol=0)
    assert torch.equal(block_0, cache["blocks.0.hook_resid_post"])


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama", "gemma3", "gemma2", "qwen2"])
def test_a_last_token_window_on_the_base_cache_gives_the_base_logits(family: str) -> None:
    """One token per row (right padding: rows end at 6, 3, 5), attending to the base run's keys and values."""
    model = HookedModel(_hf(family, window_size=16))
    last = torch.tensor([6, 3, 5])
    with torch.no_grad():
        logits, cache, kv = base_run(model, IDS, last, ["blocks.1.hook_resid_pre"], want_kv=True)
        assert kv is not None and len(kv) == 2
        win = window(model, IDS, last, LAST, kv, torch.arange(3), first_layer=1)
        resid = win.take(cache["blocks.1.hook_resid_pre"], last)
        out = run_window(model, win.ids, win.kwargs, first_layer=1, resid=resid, last=win.local_last)
        lazy = lazy_window(model, IDS, last, LAST, kv, torch.arange(3), first_layer=1)
        lazy_out = run_window(model, lazy.ids, lazy.kwargs, first_layer=1, resid=resid, last=lazy.local_last)
    assert win.ids.shape == (3, 1) and out.shape == (3, 1, 61)
    torch.testing.assert_close(out[:, 0], logits, atol=1e-5, rtol=0)
    assert torch.equal(lazy_out, out)
    kept = lazy.kwargs[cache_keyword(model.hf)].layers[1].keys
    assert kept.shape[-1] == 1  # the gathered keys were used and let go: only the one-number stand-ins stay


@pytest.mark.parametrize("family", ["gpt2", "gemma3"])
def test_greedy_decoding_from_the_base_cache_is_step_by_step_generation(family: str) -> None:
    """Right-padded rows (ending at 6, 3, 5) continue from their own last token, as each alone would."""
    model = HookedModel(_hf(family, window_size=16))
    last = torch.tensor([6, 3, 5])
    with torch.no_grad():
        logits, _, kv = base_run(model, IDS, last, [], want_kv=True)
        mask = (torch.arange(IDS.shape[1])[None] <= last[:, None]).long()
        tokens = greedy_decode(model, logits, kv_cache(model, kv), mask, last + 1, 4)
        for row in range(3):
            ids = IDS[row : row + 1, : int(last[row]) + 1]
            for _ in range(4):
                ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], 1)
            assert tokens[row].tolist() == ids[0, -4:].tolist()


def test_hooks_run_and_the_module_tree_is_never_changed() -> None:
    model = HookedModel(_hf("gemma3"))
    blocks, types = list(model.adapter.blocks()), list(model.hf.config.layer_types)
    seen: list[tuple[int, list[str]]] = []

    def check(t: torch.Tensor, *, hook: object) -> torch.Tensor:
        seen.append((len(model.adapter.blocks()), list(model.hf.config.layer_types)))
        return torch.zeros_like(t)

    with torch.no_grad():
        _, cache = model.run_with_cache(IDS, names=["blocks.1.hook_resid_pre"])
        zeroed = run_window(model, IDS, first_layer=1, resid=cache["blocks.1.hook_resid_pre"],
                            hooks=[("blocks.1.hook_attn_out", check)])
        expected = model.run_with_hooks(IDS, [("blocks.1.hook_attn_out", lambda t, *, hook: torch.zeros_like(t))])
    assert seen == [(2, types)] and list(model.adapter.blocks()) == blocks and model.hf.config.layer_types == types
    assert torch.equal(zeroed, expected)
    assert not any(b._forward_pre_hooks or b._forward_hooks for b in blocks)


def test_windows_are_checked() -> None:
    model = HookedModel(_hf("llama"))
    resid = torch.zeros(3, 7, 32)
    with pytest.raises(InputError, match=r"first_layer/stop_layer: expected 0 <= first_layer < stop_layer <= 2, "
                                         r"got 2 and None"):
        run_window(model, IDS, first_layer=2, resid=resid)
    with pytest.raises(InputError, match=r"resid: expected block 1's input exactly when first_layer > 0 \(got none"):
        run_window(model, IDS, first_layer=1)
    with pytest.raises(InputError, match=r"resid: expected block 0's input exactly when first_layer > 0 \(got one"):
        run_window(model, IDS, resid=resid)


def test_the_cache_goes_by_the_name_the_forward_takes() -> None:
    from transformers.modeling_outputs import CausalLMOutputWithPast

    class Before(nn.Module):  # transformers before the rename
        def forward(self, input_ids: torch.Tensor, past_key_values: object = None, use_cache: bool = False) -> None:
            return None

    class After(nn.Module):
        def forward(self, input_ids: torch.Tensor, cache: object = None, use_cache: bool = False) -> None:
            return None

    assert cache_keyword(Before()) == "past_key_values" and cache_keyword(After()) == "cache"
    sentinel = object()
    assert returned_cache(OrderedDict(logits=1, past_key_values=sentinel)) is sentinel
    assert returned_cache(OrderedDict(logits=1)) is None
    installed = CausalLMOutputWithPast(logits=torch.zeros(1), **{cache_keyword(tiny_hf_model("llama")): sentinel})
    assert returned_cache(installed) is sentinel
