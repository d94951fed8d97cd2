"""Activation patching: the batched, layer-skipping sweep against one-intervention-at-a-time runs."""

from __future__ import annotations

import pytest
import torch

from lmscope import HookedModel
from lmscope.causal import Component, patch_sweep, standard_components
from lmscope.errors import InputError
from lmscope.model.interventions import Patch
from patching_reference import one_patch_at_a_time
from tiny_models import tiny_hf_model


def _metric(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return logits[:, 5] - logits[:, 7]


def _pair(seed: int = 0, shape: tuple[int, int] = (5, 7)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 61, shape, generator=g), torch.randint(1, 61, shape, generator=g)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
def test_sweep_equals_one_patch_at_a_time(family: str) -> None:
    model = HookedModel(tiny_hf_model(family))
    base, source = _pair()
    comps = (standard_components(2, 4, "heads,mlp,attn,resid", position=None)
             + standard_components(2, 4, "heads,mlp", position=3) + standard_components(2, 4, "resid")
             + [Component.of(["blocks.1.mlp.hook_post:3", "blocks.0.attn:1@2"], label="mixed")])
    fast = patch_sweep(model, base, source, comps, _metric, max_rows=17)  # several chunks per layer
    slow = patch_sweep(model, base, source, comps, _metric, skip_layers=False)
    naive_t = one_patch_at_a_time(model, base, source, comps, _metric)
    torch.testing.assert_close(fast.effects, naive_t, atol=1e-5, rtol=0)
    torch.testing.assert_close(slow.effects, naive_t, atol=1e-5, rtol=0)
    assert fast.components[-1] == "mixed"


def test_self_patching_changes_nothing_and_patching_everything_gives_the_source() -> None:
    model = HookedModel(tiny_hf_model("gpt2"))
    base, source = _pair(1)
    comps = standard_components(2, 4, "heads,mlp,resid", position=None) + standard_components(2, 4, "heads,resid")
    calls: list[tuple[str, int, int]] = []
    same = patch_sweep(model, base, base, comps, _metric, progress=lambda *a: calls.append(a))
    assert same.effects.abs().max() < 1e-5
    assert calls[:4] == [("source run", 0, 1), ("source run", 1, 1), ("base run", 0, 1), ("base run", 1, 1)]
    patching = [(i, n) for stage, i, n in calls[4:] if stage == "patching"]
    assert len(patching) == len(calls) - 4 and patching[0] == (0, patching[0][1])
    assert [i for i, _ in patching] == list(range(len(patching))) and patching[-1][1] == len(patching) - 1 > 1
    everything = ["hook_embed"] + [f"blocks.{layer}.{p}" for layer in range(2)
                                                     for p in ("hook_attn_out", "hook_mlp_out")]
    full = patch_sweep(model, base, source, [Component.of(everything, label="all"), "blocks.1.hook_resid_post",
                                              "blocks.0.hook_resid_pre"], _metric)
    gap = full.y_source - full.y_base
    assert gap.abs().min() > 1e-3
    for k in range(3):
        torch.testing.assert_close(full.effects[:, k], gap, atol=1e-5, rtol=0)
    torch.testing.assert_close(full.recovered, torch.ones(3), atol=1e-5, rtol=0)


def test_last_token_patching_with_padded_texts() -> None:
    from tiny_models import tiny_hooked_with_tokenizer

    model = tiny_hooked_with_tokenizer(300)
    base = ["the senator voted", "the soup was very hot today", "a storm hit"]
    source = ["the chef baked the bread", "rain", "the stupid player scored twice"]
    first_last = int(model.to_tokens(base).last_positions().min())
    comps = standard_components(2, 4, "heads,mlp,resid")
    fixed = standard_components(2, 4, "heads,mlp,resid", position=first_last)  # the last token of the shortest
    result = patch_sweep(model, base, source, comps + fixed, _metric)
    whole = patch_sweep(model, base, source, comps + fixed, _metric, skip_layers=False)  # nothing skipped
    torch.testing.assert_close(result.effects, whole.effects, atol=1e-5, rtol=0)
    shortest = int(model.to_tokens(base).last_positions().argmin())
    assert result.effects[shortest, len(comps) :].abs().max() > 0  # a patch at its own last token matters
    for p in range(3):
        single = patch_sweep(model, [base[p]], [source[p]], comps, _metric)
        torch.testing.assert_close(result.effects[p, : len(comps)], single.effects[0], atol=1e-5, rtol=0)
    # resid_pre of layer 0 at the last token: the base's last token replaced by the source's
    resid0 = result.components.index("blocks.0.hook_resid_pre@-1")
    assert result.effects[:, resid0].abs().min() > 0
    assert result.ranking(1)[0][0] in result.components


def test_patching_refuses_bad_requests() -> None:
    model = HookedModel(tiny_hf_model("gpt2"))
    base, _ = _pair()
    with pytest.raises(InputError, match=r"^component blocks\.0\.hook_mlp_out: patching all positions needs base "
                                         r"and source inputs of the same length \(got \(5, 7\) and \(5, 5\)\); "):
        patch_sweep(model, base, base[:, :5], ["blocks.0.hook_mlp_out"], _metric)
    with pytest.raises(InputError, match="out of range"):
        patch_sweep(model, base, base, ["blocks.0.attn:9"], _metric)
    with pytest.raises(InputError, match="one per base input"):
        patch_sweep(model, base, base[:2], ["blocks.0.attn:1"], _metric)
    with pytest.raises(InputError, match="shared by every row"):
        patch_sweep(model, base, base, ["hook_pos_embed"], _metric)
    with pytest.raises(InputError, match="appears twice"):
        patch_sweep(model, base, base, ["blocks.0.attn:1", "blocks.0.attn:1"], _metric)
    with pytest.raises(InputError, match="expected a comma-separated"):
        standard_components(2, 4, "heads,bogus")


def test_model_without_a_kv_cache_runs_whole_sequences() -> None:
    from whitebox.test_crate import tiny_crate

    model = HookedModel(tiny_crate())  # CRATE returns no key/value cache: only layers are skipped
    base, source = _pair(2, (4, 7))
    comps = standard_components(2, 4, "heads,mlp,resid") + standard_components(2, 4, "heads,mlp", position=3)
    result = patch_sweep(model, base, source, comps, _metric)
    _, cache = model.run_with_cache(source)
    clean = _metric(model(base)[:, -1], torch.arange(4))
    for k, label in enumerate(result.components):
        logits = model.run_with_hooks(base, hooks=Patch([label.replace("@-1", "@6")], cache).hooks())
        torch.testing.assert_close(result.effects[:, k], _metric(logits[:, -1], torch.arange(4)) - clean,
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_rotary_families_with_padded_texts(family: str) -> None:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    from tiny_models import tiny_hooked_with_tokenizer

    tok = tiny_hooked_with_tokenizer(300).tokenizer
    torch.manual_seed(0)
    common = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "vocab_size": len(tok),
              "max_position_embeddings": 64, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    hf = (GPTNeoXForCausalLM(GPTNeoXConfig(intermediate_size=64, **common)) if family == "gpt_neox" else
          LlamaForCausalLM(LlamaConfig(intermediate_size=48, num_key_value_heads=2, **common)))
    model = HookedModel(hf.eval(), tok)
    base = ["the senator voted", "the soup was very hot today", "a storm hit"]
    source = ["the chef baked the bread", "rain", "the stupid player scored twice"]
    first_last = int(model.to_tokens(base).last_positions().min())
    comps = (standard_components(2, 4, "heads,mlp,resid") + standard_components(2, 4, "mlp", position=1)
             + standard_components(2, 4, "heads,mlp,resid", position=first_last))
    fast = patch_sweep(model, base, source, comps, _metric)  # per-row positions and masks in the windows
    whole = patch_sweep(model, base, source, comps, _metric, skip_layers=False)
    assert whole.effects.abs().mean() > 1e-3
    torch.testing.assert_close(fast.effects, whole.effects, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_feature_components_equal_adding_their_decoder_rows(family: str) -> None:
    """Patching feature f of a transcoder at the last token is adding (z_f(source) - z_f(base)) W_dec[f] to the MLP
    output there: checked against plain hooks on hook_mlp_out, with z written out from the transcoder's weights."""
    from lmscope.dictionary import DictConfig, Dictionary

    model = HookedModel(tiny_hf_model(family))
    d = model.cfg.d_model
    cfg = DictConfig(kind="transcoder", d_in=d, d_sae=6, hook_name="blocks.1.ln2.hook_normalized",
                     hook_name_out="blocks.1.hook_mlp_out")
    tc = Dictionary(cfg, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tc.b_enc.fill_(0.2)
    model.attach_dictionary("tc", tc)
    base, source = _pair(3)
    comps = [f"dict:tc:{f}@-1" for f in range(6)] + [["dict:tc:2@-1", "blocks.0.attn:1@-1"]]
    fast = patch_sweep(model, base, source, comps, _metric)
    slow = patch_sweep(model, base, source, comps, _metric, skip_layers=False)
    torch.testing.assert_close(fast.effects, slow.effects, atol=1e-5, rtol=0)
    x = "blocks.1.ln2.hook_normalized"
    z_base, z_src = (torch.relu(model.run_with_cache(t, names=[x])[1][x][:, -1] @ tc.W_enc.detach() + 0.2)
                     for t in (base, source))
    clean = _metric(model(base)[:, -1], None)
    for f in range(6):
        delta = (z_src[:, f] - z_base[:, f])[:, None] * tc.W_dec.detach()[f]

        def add(t: torch.Tensor, *, hook: object, delta: torch.Tensor = delta) -> torch.Tensor:
            t = t.clone()
            t[:, -1] += delta
            return t

        expected = _metric(model.run_with_hooks(base, hooks=[("blocks.1.hook_mlp_out", add)])[:, -1], None) - clean
        torch.testing.assert_close(fast.effects[:, f], expected, atol=1e-5, rtol=0)
    assert float(fast.effects[:, :6].abs().max()) > 0


def test_feature_components_start_at_the_block_their_dictionary_reads() -> None:
    """A feature of a transcoder reading block 1 is patched from block 1's cached input: block 0 runs in the base
    and source runs only, never in the patched forwards (with skip_layers=False it runs in every one)."""
    from lmscope.dictionary import DictConfig, Dictionary

    model = HookedModel(tiny_hf_model("gpt2"))
    cfg = DictConfig(kind="transcoder", d_in=model.cfg.d_model, d_sae=4, hook_name="blocks.1.ln2.hook_normalized",
                     hook_name_out="blocks.1.hook_mlp_out")
    model.attach_dictionary("tc", Dictionary(cfg, generator=torch.Generator().manual_seed(0)))
    base, source = _pair(4)
    comps = [f"dict:tc:{f}@-1" for f in range(4)]
    calls: list[int] = []
    handle = model.adapter.blocks()[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        fast = patch_sweep(model, base, source, comps, _metric)
        skipped = len(calls)
        calls.clear()
        whole = patch_sweep(model, base, source, comps, _metric, skip_layers=False)
    finally:
        handle.remove()
    torch.testing.assert_close(fast.effects, whole.effects, atol=1e-5, rtol=0)
    assert skipped == 2  # the base run and the source run
    assert len(calls) > skipped


@pytest.mark.parametrize("method", ["exact", "attribution"])
def test_a_component_the_forward_never_reaches_is_one_line(method: str) -> None:
    """A toy module's submodule that its forward never calls is a hook point that never fires: one InputError
    naming it (was a KeyError traceback from the engine and from attribution patching)."""
    from torch import nn

    from lmscope.model.toy import HookedModule

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.h, self.unused = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.h(x)

    net = Net()
    model = HookedModule(net, {"h": net.h, "unused": net.unused})
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InputError, match=r"^(component unused: hook 'unused'|component hook 'unused'): the forward "
                                         r"pass never reached it$"):
        patch_sweep(model, x, x + 1, ["unused"], lambda y, index: y[:, 0], method=method)
