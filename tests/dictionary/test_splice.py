"""Splicing dictionaries into the model: exact answers from stand-in dictionaries built from the model itself."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from lmscope import HookedModel
from lmscope.data.synthetic import generate_corpus
from lmscope.dictionary.splice import (
    DictionaryLike,
    Splice,
    feature_activations,
    scored_positions,
    site_mean,
    spliced_metrics,
)
from lmscope.errors import InputError
from lmscope.model.interventions import compute_means
from tiny_models import tiny_hooked_with_tokenizer

LAYER = 0
TC_IN, TC_OUT = f"blocks.{LAYER}.ln2.hook_normalized", f"blocks.{LAYER}.hook_mlp_out"
RESID = "blocks.0.hook_resid_post"


@dataclass
class Cfg:
    hook_name: str
    hook_name_out: str
    kind: str


class Affine(nn.Module):
    """Stand-in dictionary: `z = act(x @ W_enc + b_enc)`, `ŷ = z @ W_dec + b_dec (+ x @ W_skip)`."""

    def __init__(self, cfg: Cfg, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor,
                 act: nn.Module | None = None, W_skip: Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_enc, self.b_enc = nn.Parameter(W_enc.clone()), nn.Parameter(b_enc.clone())
        self.W_dec, self.b_dec = nn.Parameter(W_dec.clone()), nn.Parameter(b_dec.clone())
        self.act = act or nn.Identity()
        self.W_skip = None if W_skip is None else nn.Parameter(W_skip.clone())

    def encode(self, x: Tensor) -> Tensor:
        return self.act(x @ self.W_enc + self.b_enc)

    def decode(self, z: Tensor) -> Tensor:
        return z @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.encode(x)
        y = self.decode(z)
        return (y if self.W_skip is None else y + x @ self.W_skip), z


@pytest.fixture(scope="module")
def model() -> HookedModel:
    """The tiny random-init GPT-2 with ReLU MLPs, so a latent is either active (> 0) or exactly 0; every text
    starts with a BOS (asked for, whatever the tokenizer adds), so the BOS rule is exercised."""
    m = tiny_hooked_with_tokenizer()
    m.prepend_bos = True
    for layer in range(m.cfg.n_layers):
        m.adapter.mlp(layer).act = nn.ReLU()
    return m


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [s.text for s in generate_corpus(20, seed=1)]


@pytest.fixture(scope="module")
def zoo() -> HookedModel:
    """The trained zoo GPT-2: its losses mean something, so a bad dictionary does worse than the mean.

    (On a random-init model every prediction is near uniform, and a constant-ish garbage output can even
    beat the clean model, so "recovered < 0" has no fixed answer there.)
    """
    return HookedModel.from_pretrained("zoo:gpt2-tiny")


def transcoder_cfg(layer: int = LAYER) -> Cfg:
    return Cfg(f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out", "transcoder")


def identity_transcoder(model: HookedModel, layer: int = LAYER) -> Affine:
    """The MLP itself as a transcoder: latents are the MLP neurons, so splicing it changes nothing."""
    return Affine(transcoder_cfg(layer), model.W_in[layer], model.b_in[layer], model.W_out[layer],
                  model.b_out[layer], act=model.adapter.mlp_act(layer))


def mean_transcoder(model: HookedModel, mean: Tensor, layer: int = LAYER) -> Affine:
    """A transcoder whose output is always `mean` (its decoder is zero)."""
    d, n = model.cfg.d_model, 16
    return Affine(transcoder_cfg(layer), torch.randn(d, n), torch.zeros(n), torch.zeros(n, d), mean, act=nn.ReLU())


def garbage_transcoder(model: HookedModel, layer: int = LAYER, scale: float = 3.0) -> Affine:
    g = torch.Generator().manual_seed(7)
    d, n = model.cfg.d_model, 40
    return Affine(transcoder_cfg(layer), torch.randn(d, n, generator=g), torch.zeros(n),
                  scale * torch.randn(n, d, generator=g), scale * torch.randn(d, generator=g), act=nn.ReLU())


def clean_logits(model: HookedModel, texts: list[str]) -> Tensor:
    with torch.no_grad():
        out = model.run_with_hooks(texts)
    assert out is not None
    return out


def spliced_logits(model: HookedModel, texts: list[str], splice: Splice) -> Tensor:
    with torch.no_grad():
        out = model.run_with_hooks(texts, hooks=splice.hooks())
    assert out is not None
    return out


def test_stand_ins_satisfy_the_protocol(model: HookedModel) -> None:
    assert isinstance(identity_transcoder(model), DictionaryLike)


def test_identity_transcoder_splice_is_exact(model: HookedModel, texts: list[str]) -> None:
    tc = identity_transcoder(model)
    mask = model.to_tokens(texts).attention_mask.bool()
    torch.testing.assert_close(spliced_logits(model, texts, Splice(tc))[mask], clean_logits(model, texts)[mask],
                               atol=1e-5, rtol=1e-5)
    m = spliced_metrics(model, tc, texts, batch_size=8)
    assert abs(m.kl_div) < 1e-8
    assert abs(m.spliced_loss - m.clean_loss) < 1e-6
    assert m.ablated_loss != m.clean_loss
    # random-init MLP: ablating it does not raise the loss here, so the ratio is undefined (see test_positions)
    assert (m.ablated_loss <= m.clean_loss) == math.isnan(m.loss_recovered)
    # scored: every real token predicted from a real, non-BOS position (BOS and each text's last token excluded)
    lengths = model.to_tokens(texts).lengths
    assert m.n_tokens == int((lengths - 2).sum())
    assert (m.hook_name, m.hook_name_out) == (TC_IN, TC_OUT)


def test_clean_loss_is_cross_entropy_without_bos_prediction(model: HookedModel, texts: list[str]) -> None:
    m = spliced_metrics(model, identity_transcoder(model), texts, batch_size=7)
    losses = []
    for text in texts:  # one text at a time: no padding at all
        ids = model.to_tokens(text).input_ids[0]
        logits = clean_logits(model, [text])[0]
        assert int(ids[0]) == model.tokenizer.bos_token_id
        losses.append(torch.nn.functional.cross_entropy(logits[1:-1].double(), ids[2:], reduction="none"))
    assert m.clean_loss == pytest.approx(float(torch.cat(losses).mean()), abs=1e-5)


def kept_mean(model: HookedModel, texts: list[str], hook: str, skip: int) -> Tensor:
    """The mean of `hook` over real tokens from position `skip` on, one text at a time (no padding)."""
    rows = [model.run_with_cache(t, names=[hook])[1][hook][0, skip:] for t in texts]
    return torch.cat(rows).double().mean(0).float()


def test_mean_dictionary_recovers_nothing(model: HookedModel, texts: list[str]) -> None:
    mean = site_mean(model, TC_OUT, texts, batch_size=8)
    assert model.prepend_bos  # the BOS position is not averaged
    torch.testing.assert_close(mean, kept_mean(model, texts, TC_OUT, 1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(site_mean(model, TC_OUT, texts, exclude_first=2), kept_mean(model, texts, TC_OUT, 3),
                               atol=1e-6, rtol=1e-5)
    m = spliced_metrics(model, mean_transcoder(model, mean), texts, batch_size=8)
    assert m.ablated_loss != m.clean_loss
    assert m.spliced_loss == pytest.approx(m.ablated_loss, abs=1e-9)  # the dictionary is the ablation

    def to_mean_after_bos(out: Tensor, *, hook: object) -> Tensor:  # what splicing the mean dictionary does
        out = out.clone()
        out[:, 1:] = mean
        return out

    kl, n = 0.0, 0
    for text in texts:  # one text at a time, scored as the losses: predictions from positions 1..L-2
        with torch.no_grad():
            clean = torch.log_softmax(model(text)[0, 1:-1].double(), -1)
            spliced = torch.log_softmax(model.run_with_hooks(text, hooks=[(TC_OUT, to_mean_after_bos)])[0, 1:-1]
                                        .double(), -1)
        kl += float((clean.exp() * (clean - spliced)).sum())
        n += clean.shape[0]
    assert m.n_tokens == n and kl / n > 1e-5  # small (a random-init MLP) but far above float64 error
    assert m.kl_div == pytest.approx(kl / n, rel=1e-4)


def test_recovered_on_a_trained_model(zoo: HookedModel) -> None:
    texts = [s.text for s in generate_corpus(12, seed=1)]
    layer, out = 2, "blocks.2.hook_mlp_out"
    ident = spliced_metrics(zoo, identity_transcoder(zoo, layer), texts)
    assert ident.ablated_loss > ident.clean_loss + 0.01  # the MLP matters here
    assert abs(ident.loss_recovered - 1.0) < 1e-4 and abs(ident.kl_div) < 1e-6
    # a mean computed another way (one text at a time, the BOS position left out) still gives 0 to rounding
    mean = kept_mean(zoo, texts, out, int(zoo.prepend_bos))
    assert abs(spliced_metrics(zoo, mean_transcoder(zoo, mean, layer), texts).loss_recovered) < 1e-4
    if not zoo.prepend_bos:  # then every real token is averaged, as compute_means does
        torch.testing.assert_close(mean, compute_means(zoo, texts, [out])[out], atol=1e-6, rtol=1e-5)
    bad = spliced_metrics(zoo, garbage_transcoder(zoo, layer), texts)
    assert bad.spliced_loss > bad.ablated_loss > bad.clean_loss
    assert bad.loss_recovered < 0 and bad.kl_div > 1.0
    assert bad.clean_loss == ident.clean_loss and bad.ablated_loss == ident.ablated_loss
    d = bad.to_dict()
    assert d["kind"] == "spliced_metrics" and json.loads(json.dumps(d)) == d


def test_keeping_all_features_equals_plain_splice(model: HookedModel, texts: list[str]) -> None:
    tc = garbage_transcoder(model)
    _, plain = model.run_with_cache(texts, names=[TC_OUT], hooks=Splice(tc).hooks())
    _, kept = model.run_with_cache(texts, names=[TC_OUT], hooks=Splice(tc, features=range(40)).hooks())
    assert torch.equal(plain[TC_OUT], kept[TC_OUT])


def test_keeping_some_features_decodes_only_those(model: HookedModel, texts: list[str]) -> None:
    tc = identity_transcoder(model)
    keep = [3, 17, 60]
    _, cache = model.run_with_cache(texts, names=[TC_IN, TC_OUT], hooks=Splice(tc, features=keep).hooks())
    z = tc.encode(cache[TC_IN])
    expected = z[..., keep] @ tc.W_dec[keep] + tc.b_dec
    torch.testing.assert_close(cache[TC_OUT], expected, atol=1e-5, rtol=1e-5)


def test_ablating_a_latent_removes_its_decoder_row(model: HookedModel, texts: list[str]) -> None:
    tc = identity_transcoder(model)
    with torch.no_grad():
        z = feature_activations(model, tc, texts)
    real = model.to_tokens(texts).attention_mask.bool()
    density = (z[real] > 0).float().mean(0)
    i = int(((density - 0.5).abs()).argmin())  # a latent active at some positions and not at others
    active = z[..., i] > 0
    assert active[real].any() and not active[real].all()

    _, plain = model.run_with_cache(texts, names=[TC_OUT], hooks=Splice(tc).hooks())
    _, abl = model.run_with_cache(texts, names=[TC_OUT], hooks=Splice(tc, ablate=[i]).hooks())
    diff = abl[TC_OUT] - plain[TC_OUT]
    expected = -z[..., i : i + 1] * tc.W_dec[i]
    torch.testing.assert_close(diff[active], expected[active], atol=1e-5, rtol=1e-4)
    inactive = ~active & real  # padding rows are not outputs: their values follow no rule
    assert torch.equal(abl[TC_OUT][inactive], plain[TC_OUT][inactive])  # inactive: bit-for-bit untouched


def test_error_term_makes_the_splice_exact_for_a_bad_dictionary(model: HookedModel, texts: list[str]) -> None:
    tc = garbage_transcoder(model)
    assert not torch.allclose(spliced_logits(model, texts, Splice(tc)), clean_logits(model, texts))
    torch.testing.assert_close(spliced_logits(model, texts, Splice(tc, error_term=True)),
                               clean_logits(model, texts), atol=1e-6, rtol=1e-6)


def test_error_term_lets_only_the_edited_latent_change_the_output(model: HookedModel, texts: list[str]) -> None:
    tc = garbage_transcoder(model)
    _, clean = model.run_with_cache(texts, names=[TC_IN, TC_OUT])
    z = tc.encode(clean[TC_IN]).detach()
    i = int((z > 0).float().mean((0, 1)).argmax())
    _, edited = model.run_with_cache(texts, names=[TC_OUT], hooks=Splice(tc, ablate=[i], error_term=True).hooks())
    expected = clean[TC_OUT] - z[..., i : i + 1] * tc.W_dec[i].detach()
    torch.testing.assert_close(edited[TC_OUT], expected, atol=1e-4, rtol=1e-4)


def test_skip_term_is_kept_when_features_are_edited(model: HookedModel, texts: list[str]) -> None:
    base = identity_transcoder(model)
    W_skip = 0.1 * torch.randn(model.cfg.d_model, model.cfg.d_model, generator=torch.Generator().manual_seed(3))
    tc = Affine(base.cfg, base.W_enc.data, base.b_enc.data, base.W_dec.data, base.b_dec.data, act=base.act,
                W_skip=W_skip)
    _, cache = model.run_with_cache(texts, names=[TC_IN, TC_OUT], hooks=Splice(tc, features=[5]).hooks())
    x = cache[TC_IN]
    expected = tc.encode(x)[..., 5:6] * tc.W_dec[5] + tc.b_dec + x @ W_skip
    torch.testing.assert_close(cache[TC_OUT], expected.detach(), atol=1e-5, rtol=1e-5)


def identity_sae(model: HookedModel) -> Affine:
    d = model.cfg.d_model
    eye = torch.eye(d)
    return Affine(Cfg(RESID, RESID, "sae"), eye, torch.zeros(d), eye, torch.zeros(d))


def test_identity_sae_on_the_residual_stream(model: HookedModel, texts: list[str]) -> None:
    sae = identity_sae(model)
    torch.testing.assert_close(spliced_logits(model, texts, Splice(sae)), clean_logits(model, texts),
                               atol=1e-5, rtol=1e-5)
    m = spliced_metrics(model, sae, texts)
    assert abs(m.spliced_loss - m.clean_loss) < 1e-6 and abs(m.kl_div) < 1e-8
    assert m.ablated_loss != m.clean_loss  # the mean residual stream carries no token information
    # random init: whether ablation hurts is not fixed; recovered is 1 where it does, undefined where not
    assert math.isnan(m.loss_recovered) if m.ablated_loss <= m.clean_loss else abs(m.loss_recovered - 1.0) < 1e-4
    _, clean = model.run_with_cache(texts, names=[RESID])
    _, abl = model.run_with_cache(texts, names=[RESID], hooks=Splice(sae, ablate=[4]).hooks())
    assert torch.all(abl[RESID][..., 4] == 0)
    keep = [j for j in range(model.cfg.d_model) if j != 4]
    torch.testing.assert_close(abl[RESID][..., keep], clean[RESID][..., keep], atol=1e-6, rtol=1e-6)


def test_feature_activations(model: HookedModel, texts: list[str]) -> None:
    tc = identity_transcoder(model)
    z = feature_activations(model, tc, texts[:5])
    batch = model.to_tokens(texts[:5])
    _, cache = model.run_with_cache(texts[:5], names=[f"blocks.{LAYER}.mlp.hook_post"])
    neurons = cache[f"blocks.{LAYER}.mlp.hook_post"]
    assert z.shape == (*batch.input_ids.shape, model.cfg.d_mlp)
    real = batch.attention_mask.bool()
    assert not real.all()  # the texts differ in length, so there is padding to check
    torch.testing.assert_close(z[real], neurons[real], atol=1e-5, rtol=1e-5)  # the latents are the neurons
    assert torch.all(z[~real] == 0)


def test_scored_positions() -> None:
    from lmscope.model.inputs import TokenBatch

    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    batch = TokenBatch(torch.zeros_like(mask), mask)
    assert scored_positions(batch, prepend_bos=True).tolist() == [[False, True, True], [False, False, False]]
    assert scored_positions(batch, prepend_bos=False).tolist() == [[True, True, True], [True, False, False]]
    assert scored_positions(batch, prepend_bos=True, exclude_first=1).tolist() == [[False, False, True],
                                                                                    [False, False, False]]


def test_refusals(model: HookedModel, texts: list[str]) -> None:
    tc = identity_transcoder(model)
    with pytest.raises(InputError, match=r"^ablate: expected non-negative integer latent indices, got -1$"):
        Splice(tc, ablate=[-1])
    with pytest.raises(InputError, match=r"^features: expected non-negative integer latent indices, got 1\.5$"):
        Splice(tc, features=[1.5])  # type: ignore[list-item]
    with pytest.raises(InputError, match=f"^features/ablate: latent {model.cfg.d_mlp} out of range for a dictionary "
                                         f"with d_sae={model.cfg.d_mlp}$"):
        model.run_with_hooks(texts[:2], hooks=Splice(tc, ablate=[model.cfg.d_mlp]).hooks())
    backwards = Affine(Cfg("blocks.1.ln2.hook_normalized", TC_OUT, "transcoder"), tc.W_enc.data, tc.b_enc.data,
                       tc.W_dec.data, tc.b_dec.data)
    with pytest.raises(InputError, match=r"^splice: 'blocks\.0\.hook_mlp_out' fired before the dictionary's input "
                                         r"'blocks\.1\.ln2\.hook_normalized'; the input hook must come earlier"):
        model.run_with_hooks(texts[:2], hooks=Splice(backwards).hooks())
    with pytest.raises(InputError, match=r"^texts: expected a non-empty list of strings$"):
        spliced_metrics(model, tc, "one text")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"^batch_size: expected a positive int, got 0$"):
        spliced_metrics(model, tc, texts, batch_size=0)
    with pytest.raises(InputError, match=r"^dictionary: expected an SAE or transcoder whose cfg names its hook_name$"):
        Splice(nn.Linear(2, 2))  # type: ignore[arg-type]


def test_nan_recovered_serialises_as_null() -> None:
    from lmscope.dictionary.splice import SplicedMetrics

    m = SplicedMetrics("a", "a", 1.0, 1.0, 1.0, math.nan, 0.0, 3, "undefined: no gap")
    assert m.to_dict()["loss_recovered"] is None and m.to_dict()["loss_recovered_note"] == "undefined: no gap"


def test_batches_split_to_the_logits_budget_give_the_same_metrics(model: HookedModel, texts: list[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import lmscope.dictionary.splice as splice_module

    tc = garbage_transcoder(model)
    whole = spliced_metrics(model, tc, texts, batch_size=8)
    budget = 3 * 12 * model.cfg.d_vocab  # about three texts of 12 tokens per pass
    monkeypatch.setattr(splice_module, "LOGITS_BUDGET", budget)
    batches = splice_module._token_batches(model, texts, 8)
    assert len(batches) > 6 and sum(b.input_ids.shape[0] for b in batches) == len(texts)
    assert all(b.input_ids.numel() * model.cfg.d_vocab <= budget or b.input_ids.shape[0] == 1 for b in batches)
    assert all(int(b.lengths.max()) == b.input_ids.shape[1] for b in batches)  # padding trimmed
    split = spliced_metrics(model, tc, texts, batch_size=8)
    assert split.n_tokens == whole.n_tokens
    for name in ("clean_loss", "spliced_loss", "ablated_loss", "kl_div"):
        assert getattr(split, name) == pytest.approx(getattr(whole, name), abs=1e-6), name
