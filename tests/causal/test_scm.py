"""Mediation on a linear SCM with known coefficients: closed forms within the CI, and the confounding bias."""

from __future__ import annotations

import pytest
import torch

from lmscope.causal import mediate
from lmscope.causal.scm import C_M, C_Y, A, B, D, delta_c, scm_data, scm_model


@pytest.fixture(scope="module")
def scm_result():  # type: ignore[no-untyped-def]
    x, t, c = scm_data(300, seed=3)
    result = mediate(scm_model(), x, t, c, ["m"], lambda out, idx: out, n_boot=400, max_pairs=30_000, seed=1)
    return result, delta_c(t, c)


@pytest.mark.parametrize("scheme", ["stratified", "entropy_balancing"])
def test_adjusted_effects_match_closed_forms_within_ci(scm_result, scheme):  # type: ignore[no-untyped-def]
    result, _ = scm_result
    for effect, truth in (("nie", A * B), ("nde", D), ("te", D + A * B)):
        low, high = result.ci(effect, scheme)
        assert float(low[0]) < truth < float(high[0]), (scheme, effect, float(low[0]), float(high[0]))


def test_unadjusted_effects_biased_as_the_closed_form_predicts(scm_result):  # type: ignore[no-untyped-def]
    result, dc = scm_result
    assert dc > 0.3  # the treated have larger C
    nie, nde = float(result.nie("unadjusted")[0]), float(result.nde("unadjusted")[0])
    # NIE bias b c_m dC and NDE bias c_y dC, both positive; the truth lies outside the unadjusted intervals
    assert nie == pytest.approx(A * B + B * C_M * dc, rel=0.15)
    assert nde == pytest.approx(D + C_Y * dc, rel=0.2)
    assert float(result.ci("nie", "unadjusted")[0][0]) > A * B
    assert float(result.ci("nde", "unadjusted")[0][0]) > D


def test_adjusted_effects_not_biased(scm_result):  # type: ignore[no-untyped-def]
    result, dc = scm_result
    for scheme in ("stratified", "entropy_balancing"):
        assert abs(float(result.nie(scheme)[0]) - A * B) < 0.25 * B * C_M * dc
        assert abs(float(result.nde(scheme)[0]) - D) < 0.25 * C_Y * dc


def test_linear_decomposition_and_balance(scm_result):  # type: ignore[no-untyped-def]
    result, _ = scm_result
    for scheme in ("unadjusted", "stratified", "entropy_balancing"):  # linear SCM: TE = NDE + NIE (float32 model)
        assert result.te(scheme) == pytest.approx(float(result.nde(scheme)[0] + result.nie(scheme)[0]), abs=1e-5)
    diag = result.meta["diagnostics"]["entropy_balancing"]
    assert diag["max_imbalance_treated"] < 1e-6 and diag["max_imbalance_control"] < 1e-6
    assert sum(s["treated"] + s["control"] for s in result.strata.values()) == 300


def test_hooked_module_reads_and_sets_the_mediator() -> None:
    x, _, _ = scm_data(5)
    model = scm_model()
    out, cache = model.run_with_cache(x, names=["m"])
    assert torch.allclose(cache["m"][:, 0], A * x[:, 0] + C_M * x[:, 1] + x[:, 2])
    held = model.run_with_hooks(x, [("m", lambda t, *, hook: torch.zeros_like(t))])
    assert torch.allclose(out - held, B * cache["m"][:, 0])


def test_mediate_refuses_bad_inputs() -> None:
    from lmscope.errors import InputError

    x, t, c = scm_data(20)
    model, outcome = scm_model(), lambda out, idx: out
    with pytest.raises(InputError, match=r"^treatment: needs both treated \(1\) and control \(0\) rows$"):
        mediate(model, x, [0] * 20, c, ["m"], outcome)
    with pytest.raises(InputError, match=r"^treatment: expected 20 values \(one per input\), got 5$"):
        mediate(model, x, t[:5], c, ["m"], outcome)
    with pytest.raises(InputError, match=r"^treatment: expected 0/1 or true/false values, got 2$"):
        mediate(model, x, [2] * 20, c, ["m"], outcome)
    with pytest.raises(InputError, match=r"^confounder: expected 20 labels \(one per input\), got 3$"):
        mediate(model, x, t, c[:3], ["m"], outcome)
    with pytest.raises(InputError, match=r"^features: expected 20 rows \(one per input\), got 3$"):
        mediate(model, x, t, c, ["m"], outcome, features=torch.zeros(3, 2))
    with pytest.raises(InputError, match=r"^hook name 'h': not a hook point of this model; valid names look like m$"):
        mediate(model, x, t, c, ["h"], outcome)


def test_entropy_balancing_on_given_features_and_pair_sampling() -> None:
    x, t, c = scm_data(200, seed=5)
    feats = torch.tensor(c, dtype=torch.float64)[:, None]  # C's mean instead of its indicators
    result = mediate(scm_model(), x, t, c, ["m"], lambda out, idx: out, features=feats, n_boot=100, max_pairs=2000)
    assert 1600 < result.meta["n_pairs"] < 2400 and result.meta["diagnostics"]["entropy_balancing"][
        "max_imbalance_control"] < 1e-6
    low, high = result.ci("nie", "entropy_balancing")  # linear in C: balancing its mean removes the bias
    assert float(low[0]) < A * B < float(high[0])
    low, high = result.ci("nie", "stratified")  # same-stratum pairs are all kept, cross pairs sampled
    assert float(low[0]) < A * B < float(high[0])
