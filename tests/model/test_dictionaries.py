"""Attached dictionaries: their features are hook points; the output moves only by decode(z') - decode(z).

The dictionaries here are hand-built stand-ins with the duck type the model reads (no lmscope.dictionary), so
every expected value is written out from their weights.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import Tensor

from lmscope import HookedModel
from lmscope.errors import InputError
from lmscope.model.interventions import AddToUnits, ZeroAblation
from lmscope.model.units import Unit
from tiny_models import tiny_hf_model

FEAT = "tc.hook_sae_acts_post"


class HandDictionary:
    """`z = relu(x @ W_enc + b_enc)`, `decode(z) = z @ W_dec + b_dec`; `W_dec` hidden when `expose_w_dec=False`."""

    def __init__(self, hook_in: str, hook_out: str, d_in: int, d_sae: int, seed: int, *, expose_w_dec: bool = True):
        g = torch.Generator().manual_seed(seed)
        self.cfg = SimpleNamespace(hook_name=hook_in, hook_name_out=hook_out, d_sae=d_sae,
                                   kind="sae" if hook_in == hook_out else "transcoder")
        self.W_enc = torch.randn(d_in, d_sae, generator=g) / d_in**0.5
        self.b_enc = torch.full((d_sae,), 0.1)
        self._W_dec = torch.randn(d_sae, d_in, generator=g)
        self.b_dec = torch.randn(d_in, generator=g)
        if expose_w_dec:
            self.W_dec = self._W_dec

    def encode(self, x: Tensor) -> Tensor:
        return torch.relu(x @ self.W_enc + self.b_enc)

    def decode(self, z: Tensor) -> Tensor:
        return z @ self._W_dec + self.b_dec


def transcoder(model: HookedModel, layer: int = 0, seed: int = 0) -> HandDictionary:
    return HandDictionary(f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out",
                          model.cfg.d_model, 12, seed)


@pytest.fixture
def model(family: str) -> HookedModel:
    return HookedModel(tiny_hf_model(family))


def test_capturing_features_leaves_logits_bit_identical(model: HookedModel, tokens: Tensor) -> None:
    clean = model(tokens)
    tc = transcoder(model)
    assert model.attach_dictionary("tc", tc) == FEAT
    x_name = "blocks.0.ln2.hook_normalized"
    logits, cache = model.run_with_cache(tokens, names=[FEAT, x_name])
    assert torch.equal(logits, clean)
    z = cache[FEAT]
    assert z.shape == (*tokens.shape, 12)
    torch.testing.assert_close(z, torch.relu(cache[x_name] @ tc.W_enc + 0.1), rtol=0, atol=1e-6)
    seen: list[Tensor] = []
    with torch.enable_grad():  # a capture under autograd is wired in with a zero edit: still the same logits
        assert torch.equal(model.run_with_hooks(tokens, hooks=[(FEAT, lambda t, *, hook: seen.append(t))]), clean)
    assert len(seen) == 1 and torch.equal(seen[0].detach(), z)


def test_zero_ablating_a_feature_moves_the_output_by_its_decoder_row(model: HookedModel, tokens: Tensor) -> None:
    tc = transcoder(model)
    model.attach_dictionary("tc", tc)
    out = "blocks.0.hook_mlp_out"
    _, clean = model.run_with_cache(tokens, names=[FEAT, out])
    z = clean[FEAT]
    _, abl = model.run_with_cache(tokens, names=[FEAT, out], hooks=ZeroAblation("dict:tc:3@2").hooks())
    assert torch.all(abl[FEAT][:, 2, 3] == 0)
    expected = clean[out].clone()
    expected[:, 2] -= z[:, 2, 3:4] * tc.W_dec[3]
    torch.testing.assert_close(abl[out], expected, rtol=0, atol=1e-5)
    assert torch.equal(abl[out][:, [0, 1, 3]], clean[out][:, [0, 1, 3]])  # other positions: bit for bit


def test_sae_edit_through_decode_is_seen_by_hooks_on_its_point(model: HookedModel, tokens: Tensor) -> None:
    site = "blocks.1.hook_resid_pre"
    sae = HandDictionary(site, site, model.cfg.d_model, 6, seed=1, expose_w_dec=False)
    model.attach_dictionary("sae", sae)
    _, clean = model.run_with_cache(tokens, names=[site])
    _, steered = model.run_with_cache(tokens, names=[site, "sae.hook_sae_acts_post"],
                                      hooks=AddToUnits("dict:sae:4", 2.0).hooks())
    torch.testing.assert_close(steered[site] - clean[site], (2.0 * sae._W_dec[4]).expand_as(clean[site]),
                               rtol=0, atol=1e-5)


def test_gradient_of_a_logit_with_respect_to_a_feature_is_its_decoder_row(model: HookedModel,
                                                                          tokens: Tensor) -> None:
    tc = transcoder(model)
    model.attach_dictionary("tc", tc)
    out = "blocks.0.hook_mlp_out"
    logits, cache = model.run_with_cache(tokens, names=[FEAT, out], grad=True)
    g_z, g_out = torch.autograd.grad(logits[:, -1, 5].sum(), [cache[FEAT], cache[out]])
    torch.testing.assert_close(g_z, g_out @ tc.W_dec.T, rtol=1e-5, atol=1e-6)
    assert float(g_z.abs().max()) > 0


def test_feature_points_are_hook_names_and_refused_when_not_attached(family: str) -> None:
    model = HookedModel(tiny_hf_model(family))
    with pytest.raises(InputError, match=r"dictionary 'runs/x': not attached.*attach_dictionaries"):
        model.check_names(["runs/x.hook_sae_acts_post"])
    with pytest.raises(InputError, match="dictionary 'runs/x': not attached"):
        model.run_with_hooks(torch.ones(1, 3, dtype=torch.long), hooks=ZeroAblation("dict:runs/x:1").hooks())
    tc = transcoder(model, layer=1)
    model.attach_dictionary("tc", tc)
    names = model.hook_names
    assert names.index(FEAT) == names.index("blocks.1.ln2.hook_normalized") + 1
    assert model.dictionaries == {"tc": tc} and model.dictionary_at(FEAT) is tc
    assert model.attach_dictionary("tc", tc) == FEAT  # the same object again: nothing changes
    with pytest.raises(InputError, match="name 'tc': another dictionary"):
        model.attach_dictionary("tc", transcoder(model))
    with pytest.raises(InputError, match=r"name 'blocks\.0': clashes"):
        model.attach_dictionary("blocks.0", transcoder(model))
    with pytest.raises(InputError, match=r"its hook_name 'blocks\.7\.ln2\.hook_normalized' is not a hook point"):
        model.attach_dictionary("t7", transcoder(model, layer=7))
    with pytest.raises(InputError, match="expected an SAE or transcoder"):
        model.attach_dictionary("nothing", object())
    backwards = HandDictionary("blocks.1.hook_mlp_out", "blocks.0.hook_mlp_out", model.cfg.d_model, 4, 0)
    with pytest.raises(InputError, match="comes before its input"):
        model.attach_dictionary("back", backwards)
    model.detach_dictionary("tc")
    with pytest.raises(InputError, match="not attached"):
        model.check_names([FEAT])
    with pytest.raises(InputError, match="name 'tc': no dictionary attached"):
        model.detach_dictionary("tc")


def test_stop_at_layer_and_shape_checks(tokens: Tensor) -> None:
    model = HookedModel(tiny_hf_model("gpt2"))
    model.attach_dictionary("tc", transcoder(model, layer=0))
    logits, cache = model.run_with_cache(tokens, names=[FEAT], stop_at_layer=1, return_logits=False)
    assert logits is None and cache[FEAT].shape == (*tokens.shape, 12)
    assert FEAT in model.run_with_cache(tokens)[1]  # names=None: every hook point, features included
    with pytest.raises(InputError, match=r"'tc\.hook_sae_acts_post' is never reached"):
        model.run_with_cache(tokens, names=[FEAT], stop_at_layer=0)
    with pytest.raises(InputError, match=r"hook on 'tc.hook_sae_acts_post' returned a tensor of shape \(3, 11\)"):
        model.run_with_hooks(tokens, hooks=[(FEAT, lambda t, *, hook: t[..., 0])])


def test_unit_spellings_of_a_feature() -> None:
    unit = Unit.parse("runs/tc.hook_sae_acts_post:7@-1")
    assert unit == Unit.parse("dict:runs/tc:7@-1")
    assert (unit.kind, unit.hook, unit.dictionary, str(unit)) == (
        "feature", "runs/tc.hook_sae_acts_post", "runs/tc", "dict:runs/tc:7@-1")


def test_a_feature_sits_in_the_block_its_dictionary_reads() -> None:
    from lmscope.causal import Component

    model = HookedModel(tiny_hf_model("gpt2"))
    model.attach_dictionary("tc", transcoder(model, layer=1))
    assert model.hook_layer(FEAT) == 1 and model.hook_layer("blocks.0.hook_mlp_out") == 0
    assert model.hook_layer("hook_embed") is None
    both = Component.of(["dict:tc:3@-1", "blocks.1.hook_mlp_out@-1"])
    assert both.layer is None  # from the names alone a feature's block is unknown
    assert both.first_layer(model) == 1
    with pytest.raises(InputError, match="not attached"):
        model.hook_layer("other.hook_sae_acts_post")


def test_a_dictionary_of_another_width_is_refused_when_attached() -> None:
    """A dictionary whose cfg records d_in/d_out other than the model's widths at its hooks (one made for another
    model, e.g. SmolLM2's 576 on Gemma 3's 640) is one InputError line at attach time, not a shape error in the
    middle of a forward; the hook widths are the model's own (d_mlp at the neurons, d_model elsewhere)."""
    model = HookedModel(tiny_hf_model("gpt2"))
    d, d_mlp = model.cfg.d_model, model.cfg.d_mlp
    assert model.hook_width("blocks.0.mlp.hook_post") == d_mlp and model.hook_width("blocks.0.hook_mlp_out") == d
    assert model.hook_width("blocks.0.attn.hook_z") == model.cfg.n_heads * model.cfg.d_head
    wide = transcoder(model)
    wide.cfg.d_in, wide.cfg.d_out = d + 8, d
    with pytest.raises(InputError, match=rf"^dictionary 'tc': its d_in is {d + 8}, but blocks\.0\.ln2\.hook_normalized "
                                         rf"of this model is {d} wide; it was made for another model$"):
        model.attach_dictionary("tc", wide)
    wide.cfg.d_in, wide.cfg.d_out = d, d_mlp
    with pytest.raises(InputError, match=rf"^dictionary 'tc': its d_out is {d_mlp}, but blocks\.0\.hook_mlp_out "):
        model.attach_dictionary("tc", wide)
    assert model.dictionaries == {}
    wide.cfg.d_out = d
    assert model.attach_dictionary("tc", wide) == FEAT and model.hook_width(FEAT) == 12
