"""A planted case: hidden unit 0 only tracks the topic, unit 1 carries the treatment's effect.

The outcome is sigmoid(1.0 * h1 + 3.0 * h0 + noise units): politics (h0 = 1) raises it, and politics also
makes the treatment (toxicity) far more likely, as in the topic corpus. Plain patching and the correlation
with the treatment put the topic unit first; the adjusted NIE puts the treatment unit first and the
topic unit at zero.
"""

from __future__ import annotations

import random

import pytest
import torch
from torch import Tensor, nn

from lmscope.causal import HookedModule, mediate
from lmscope.data.topics import TOPICS, TOXICITY_RATE_BY_TOPIC


class Planted(nn.Module):
    """Input `[t, politics?, noise1, noise2]` -> hidden `h` (4 units, hook point) -> sigmoid outcome."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(4, 4, bias=False)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
        self.h = nn.Identity()
        self.readout = torch.tensor([3.0, 1.0, 0.2, -0.2])

    def forward(self, x: Tensor) -> Tensor:
        h = self.h(self.hidden(x))
        return torch.sigmoid(h @ self.readout - 1.5)


def planted_data(n: int, seed: int = 0) -> tuple[Tensor, list[int], list[str]]:
    rng = random.Random(seed)
    topics = [rng.choice(TOPICS) for _ in range(n)]
    t = [int(rng.random() < TOXICITY_RATE_BY_TOPIC[c] * 1.6) for c in topics]
    x = torch.tensor([[ti, float(c == "politics"), rng.gauss(0, 1), rng.gauss(0, 1)]
                      for ti, c in zip(t, topics, strict=True)])
    return x, t, topics


@pytest.fixture(scope="module")
def planted_result():  # type: ignore[no-untyped-def]
    module = Planted()
    x, t, topics = planted_data(400)
    model = HookedModule(module, {"h": module.h})
    units = ["h:0", "h:1", "h:2", "h:3"]
    return mediate(model, x, t, topics, units, lambda out, idx: out, n_boot=300, seed=2), x, t


def test_plain_patching_and_correlation_rank_the_topic_unit_first(planted_result):  # type: ignore[no-untyped-def]
    result, x, t = planted_result
    assert result.ranking("unadjusted")[0][0] == "h:0"
    corr = [abs(float(torch.corrcoef(torch.stack([x[:, k], torch.tensor(t, dtype=torch.float)]))[0, 1]))
            for k in (1, 0)]  # topic unit reads x[:, 1], treatment unit x[:, 0]: both correlate with T
    assert corr[0] > 0.3
    low, _ = result.ci("nie", "unadjusted")
    assert float(low[0]) > 0  # the spurious indirect effect is "significant"


def test_adjusted_nie_ranks_the_treatment_unit_first_and_clears_the_topic_unit(planted_result):  # type: ignore
    result, _, _ = planted_result
    assert result.ranking("stratified")[0][0] == "h:1"
    nie = result.nie("stratified")
    assert abs(float(nie[0])) < 1e-9  # within a topic the topic unit never changes
    assert float(nie[1]) > 0.1
    assert all(abs(float(v)) < 0.05 for v in nie[2:])
    assert result.ranking("entropy_balancing")[0][0] == "h:1"
    assert abs(float(result.nie("entropy_balancing")[0])) < 0.3 * abs(float(result.nie("unadjusted")[0]))


def closed_form_localization(nie: Tensor, k: int) -> tuple[float, float]:
    """Top-k share = sum of the k largest |NIE| / sum |NIE|; Gini = sum_i sum_j |x_i - x_j| / (2 n sum x)."""
    x = [abs(float(v)) for v in nie]
    top = sum(sorted(x, reverse=True)[:k]) / sum(x)
    gini = sum(abs(a - b) for a in x for b in x) / (2 * len(x) * sum(x))
    return top, gini


def test_localization_scores_before_and_after(planted_result):  # type: ignore[no-untyped-def]
    result, _, _ = planted_result
    for scheme in ("unadjusted", "stratified", "entropy_balancing"):
        loc = result.localization[scheme]
        assert loc["top_k"] == 3
        top, gini = closed_form_localization(result.nie(scheme), 3)
        assert loc["top_k_share"] == pytest.approx(top, rel=1e-12)  # scored in float64, as the NIE are
        assert loc["gini"] == pytest.approx(gini, rel=1e-12)
    # the planted topic unit carries exactly nothing once adjusted, so the other three of the four units hold
    # all of |NIE|: the top-3 share is 1; before adjustment the topic unit holds the most, so it is below 1
    assert result.localization["stratified"]["top_k_share"] == pytest.approx(1.0, abs=1e-8)
    assert result.localization["unadjusted"]["top_k_share"] < 1 - 1e-3
    # adjustment moves the spurious effect off h:0, leaving one unit (h:1) with most of |NIE|
    assert result.localization["stratified"]["gini"] > result.localization["unadjusted"]["gini"] + 0.1
    assert result.by_stratum["politics"][0] == pytest.approx(0.0, abs=1e-9)
