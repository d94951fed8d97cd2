"""A dictionary feature is a unit: a planted transcoder feature of a zoo model is cached, ablated, patched,
mediated, ranked and explained with the calls that take neurons, and every answer is known from its weights.

The planted transcoder reads `hook_embed` and writes `ln_final.hook_normalized` (the unembedding's input) of
zoo:gpt2-tiny. Feature F's encoder is `2 W_E[year] / |W_E[year]|^2` with bias -1, so it is exactly 1 on the
token ' year' and 0 on every other token (each other embedding projects less than half onto W_E[year], checked
below). Its decoder row is `v = 3 W_U[:, month] / |W_U[:, month]|^2`, so a change `dz` of the feature moves the
logits at that position by exactly `dz * (v @ W_U)`, and the ' month' logit by `3 dz`.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from lmscope import HookedModel
from lmscope.activations import ExtractConfig, extract
from lmscope.autointerp import score_texts
from lmscope.causal import mediate, patch_sweep
from lmscope.data.labels import LabeledCorpus
from lmscope.dictionary import DictConfig, Dictionary, attach_dictionaries, save_dictionary
from lmscope.errors import InputError
from lmscope.model.interventions import (
    AddToUnits,
    AddVector,
    MeanAblation,
    Patch,
    Replace,
    ZeroAblation,
    compute_means,
)
from lmscope.model.units import Unit
from lmscope.neurons.analysis import evaluate_ranking, rank_neurons
from lmscope.neurons.dataset import load_dataset
from tiny_models import tiny_hf_model

F, D_SAE = 5, 8
WORDS = ["the", "month", "ended", "after", "now", "turn", "followed", "were", "next", "began", "and", "he", "said"]


class Planted:
    def __init__(self, model: HookedModel, path: Path) -> None:
        self.model, self.path = model, str(path)
        tok = model.tokenizer
        self.year, self.month = tok.encode(" year")[-1], tok.encode(" month")[-1]
        self.unit = f"dict:{self.path}:{F}"
        self.hook = f"{self.path}.hook_sae_acts_post"
        W_E, W_U = model.W_E.detach(), model.W_U.detach()
        e = W_E[self.year]
        others = torch.cat([W_E[: self.year], W_E[self.year + 1 :]])
        assert float((others @ e).max() / (e @ e)) < 0.45  # F fires on ' year' only
        self.v = 3 * W_U[:, self.month] / W_U[:, self.month].pow(2).sum()
        self.logit_shift = self.v @ W_U  # [d_vocab]: the logits' change per unit of feature F

    def z_F(self, ids: torch.Tensor) -> torch.Tensor:
        """Feature F from the token ids alone: 1 where the token is ' year'."""
        return (ids == self.year).float()


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Planted:
    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    d = model.cfg.d_model
    cfg = DictConfig(kind="transcoder", d_in=d, d_sae=D_SAE, hook_name="hook_embed",
                     hook_name_out="ln_final.hook_normalized")
    tc = Dictionary(cfg, generator=torch.Generator().manual_seed(0))
    W_E, W_U = model.W_E.detach(), model.W_U.detach()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        tc.W_enc.copy_(0.3 * torch.randn(d, D_SAE, generator=g) / W_E.norm(dim=1).mean() / d**0.5)
        tc.b_enc.zero_()
        tc.W_dec.mul_(0.1)
        e = W_E[model.tokenizer.encode(" year")[-1]]
        tc.W_enc[:, F] = 2 * e / (e @ e)
        tc.b_enc[F] = -1.0
        u = W_U[:, model.tokenizer.encode(" month")[-1]]
        tc.W_dec[F] = 3 * u / (u @ u)
    path = tmp_path_factory.mktemp("planted") / "tc"
    save_dictionary(tc, path, model=model)
    assert attach_dictionaries(model, [f"dict:{path}:{F}", "blocks.0.attn:1"]) == [f"{path}.hook_sae_acts_post"]
    return Planted(model, path)


def sentences(n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 8))]
        if i % 3 == 0:
            words[rng.randrange(len(words))] = "year"
        out.append(words)
    return out


def test_attach_by_unit_and_refusals(planted: Planted) -> None:
    model = planted.model
    tc = model.dictionaries[planted.path]
    assert attach_dictionaries(model, [planted.hook, "blocks.0.mlp.hook_post:3"]) == [planted.hook]
    assert model.dictionaries[planted.path] is tc  # attached once, not read again
    fresh = HookedModel.from_pretrained("zoo:gpt2-tiny")
    with pytest.raises(InputError, match=r"not attached.*attach_dictionaries"):
        fresh.run_with_hooks("the year", hooks=ZeroAblation(planted.unit).hooks())
    other = HookedModel(tiny_hf_model("gpt2"))
    with pytest.raises(InputError, match=r"^dictionary .*tc was made with zoo:gpt2-tiny \(n_layers 4\), not with "
                                         r"gpt2 \(n_layers 2\); its shapes do not fit this model$"):
        attach_dictionaries(other, [planted.unit])  # made with zoo:gpt2-tiny: provenance refuses it
    assert other.dictionaries == {}


def test_cache_and_interventions_with_closed_forms(planted: Planted) -> None:
    model = planted.model
    text = "the year ended and the next year began ."
    ids = model.to_tokens(text).input_ids
    clean = model(text)
    logits, cache = model.run_with_cache(text, names=[planted.hook])
    assert torch.equal(logits, clean)
    torch.testing.assert_close(cache[planted.hook][..., F], planted.z_F(ids), rtol=0, atol=1e-5)
    shift = planted.logit_shift

    def check(hooks: list, dz: torch.Tensor) -> None:  # dz [pos]: the change of feature F per position
        torch.testing.assert_close(model.run_with_hooks(text, hooks=hooks)[0] - clean[0], dz[:, None] * shift,
                                   rtol=0, atol=2e-4)

    z = planted.z_F(ids)[0]
    check(ZeroAblation(planted.unit).hooks(), -z)
    # a feature and a neuron compose into one intervention, as two neurons do
    assert len((ZeroAblation(planted.unit) + ZeroAblation("blocks.3.mlp.hook_post:1")).hooks()) == 2
    check(AddToUnits(f"{planted.unit}@-1", 2.0).hooks(), torch.eye(len(z))[-1] * 2.0)
    check(AddVector(planted.hook, 2.0 * torch.eye(D_SAE)[F], positions=[-1]).hooks(), torch.eye(len(z))[-1] * 2.0)
    # Replace on the feature point: every feature zeroed moves the logits by -(z @ W_dec) @ W_U
    W_dec = model.dictionaries[planted.path].W_dec.detach()
    replaced = model.run_with_hooks(text, hooks=Replace(planted.hook, torch.zeros_like).hooks())
    expected = -(cache[planted.hook][0] @ W_dec) @ model.W_U.detach()
    torch.testing.assert_close(replaced[0] - clean[0], expected, rtol=0, atol=2e-4)
    means = compute_means(model, [text, "the month ended now ."], [planted.hook])
    mean_F = 2 / (len(z) + 6)  # two ' year' tokens among the real tokens of both texts (each with its BOS)
    torch.testing.assert_close(means[planted.hook][F], torch.tensor(mean_F), rtol=0, atol=1e-5)
    check(MeanAblation(planted.unit, means).hooks(), mean_F - z)
    source = "the month year ended and year the began ."
    assert model.to_tokens(source).input_ids.shape == ids.shape
    _, src_cache = model.run_with_cache(source, names=[planted.hook])
    check(Patch(planted.unit, src_cache).hooks(), planted.z_F(model.to_tokens(source).input_ids)[0] - z)


BASE = ["the month ended now the", "he said the next year", "the year were followed and", "now he said the year"]
SOURCE = ["the month ended now year", "he said the next turn", "the year were followed year", "now he said the turn"]


def test_patch_sweep_and_attribution_over_features(planted: Planted) -> None:
    model = planted.model
    month = planted.month
    comps = [f"{planted.unit}@-1", f"dict:{planted.path}:0@-1", "blocks.0.attn:1@-1", planted.unit,
             f"{planted.unit}@4"]
    exact = patch_sweep(model, BASE, SOURCE, comps, lambda logits, index: logits[:, month])
    # patching F at the last token moves the ' month' logit by 3 x (F in the source - F in the base)
    z_last = [planted.z_F(model.to_tokens(texts).input_ids)[:, -1] for texts in (SOURCE, BASE)]
    torch.testing.assert_close(exact.effects[:, 0], 3.0 * (z_last[0] - z_last[1]), rtol=0, atol=1e-4)
    assert exact.effects[:, 0].tolist() == pytest.approx([3.0, -3.0, 3.0, -3.0], abs=1e-4)
    # F writes at its own position only: patched everywhere it acts through the last token; at 4, not at all
    torch.testing.assert_close(exact.effects[:, 3], exact.effects[:, 0], rtol=0, atol=1e-4)
    assert exact.effects[:, 4].abs().max() < 1e-4
    estimate = patch_sweep(model, BASE, SOURCE, comps, lambda logits, index: logits[:, month], method="attribution")
    # the metric is linear in a feature's activation, so the first-order estimate is exact for every feature unit
    features = [0, 1, 3, 4]
    torch.testing.assert_close(estimate.effects[:, features], exact.effects[:, features], rtol=0, atol=1e-4)


def test_mediation_through_a_feature(planted: Planted) -> None:
    model = planted.model
    texts = ["the month ended now year", "he said the next year", "now the month were year", "he said year",
             "the month ended now the", "he said the next turn", "now the month were after", "he said now"]
    treated = [1, 1, 1, 1, 0, 0, 0, 0]
    month = planted.month
    result = mediate(model, texts, treated, ["a", "b", "a", "b", "a", "b", "a", "b"], [f"{planted.unit}@-1"],
                     lambda logits, index: logits[:, month], n_boot=20)
    for scheme in ("unadjusted", "stratified", "entropy_balancing"):
        effects = result.effects[scheme]
        # the feature is 1 at every treated last token and 0 at every control one: patching it moves 3 logits
        assert effects["nie"]["estimate"][0] == pytest.approx(3.0, abs=1e-4)
        assert effects["nde"]["estimate"][0] == pytest.approx(effects["te"]["estimate"][0] - 3.0, abs=1e-4)


def test_features_as_store_columns_rank_and_evaluate(planted: Planted, tmp_path: Path) -> None:
    model = planted.model
    sents = sentences(60, seed=0)
    corpus = LabeledCorpus(sents, [["year" if w == "year" else "other" for w in s] for s in sents])
    store = extract(model, corpus.sentences, tmp_path / "store",
                    ExtractConfig((planted.hook, "blocks.0.mlp.hook_post")))
    assert store.dims[planted.hook] == D_SAE
    data = load_dataset(store, corpus, points=[planted.hook], control=False)
    for method in ("probeless", "lca"):
        ranking = rank_neurons(data, method)
        top = ranking.units(1)[0]
        assert Unit.parse(top) == Unit.parse(planted.unit), method
    report = evaluate_ranking(data, rank_neurons(data, "probeless"), [1])
    assert report["top"] == [pytest.approx(1.0)]  # the planted feature alone classifies every held-out word
    assert report["majority"] < 0.99  # always guessing "other" misses every held-out year


def test_autointerp_explains_the_feature(planted: Planted) -> None:
    texts = [" ".join(s) for s in sentences(40, seed=1)]
    result = score_texts(planted.model, texts, points=[planted.hook])
    row = next(r for r in result.units if Unit.parse(r["unit"]) == Unit.parse(planted.unit))
    assert row["explanation"]["terms"] == {"year": 1.0}  # the offline explainer: fires on "year" with z = 1
    assert row["max_activation"] == pytest.approx(1.0, abs=1e-5)
    assert row["top_and_random"] == pytest.approx(1.0, abs=1e-5)  # its simulation is its activation exactly
