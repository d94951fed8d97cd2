"""One hand-built result of every kind lmscope saves, with planted numbers (no model run), for the round-trip
tests (tests/test_result_kinds.py) and `lmscope report` (tests/report/test_rebuild.py)."""

from __future__ import annotations

from typing import Any

import torch

from lmscope.autointerp.result import AutointerpResult
from lmscope.causal.results import MediationResult, PatchingResult
from lmscope.dictionary.splice import SplicedMetrics
from lmscope.heads.arithmetic import ArithmeticResult
from lmscope.heads.detectors import HeadScores
from lmscope.heads.mod10 import Mod10Result
from lmscope.heads.succession import SuccessionResult
from lmscope.heads.wild import CATEGORIES, WildResult
from lmscope.neurons.ablation import AblationResult
from lmscope.neurons.analysis import NeuronRanking
from lmscope.neurons.evaluation import AccuracyAtK, Selectivity
from lmscope.results import ResultMixin
from lmscope.whitebox.compare import ComparisonResult

POINT = "blocks.1.mlp.hook_post"


def ranking() -> NeuronRanking:
    overall = [{"point": POINT, "neuron": n, "score": s} for n, s in ((7, 0.875), (3, 0.5), (11, 0.25))]
    per_class = {"NOUN": overall[:2], "VERB": [{"point": "blocks.0.mlp.hook_post", "neuron": 5, "score": 0.625}]}
    return NeuronRanking("lca", {"l1": 0.001}, overall, per_class, 480, ["NOUN", "VERB"], {"test": 0.8125})


def accuracy() -> AccuracyAtK:
    return AccuracyAtK([1, 3, 10], [0.625, 0.75, 0.8125], [0.5, 0.53125, 0.6875], [0.5, 0.5, 0.5625], 0.84375,
                       0.5, 24)


def selectivity() -> Selectivity:
    return Selectivity(0.75, 0.4375, 0.3125, 3)


def ablation() -> AblationResult:
    return AblationResult(2, "zero", [f"{POINT}:7", f"{POINT}:3"], 0.8125, 0.5625, 0.78125, 2.25, 2.75, 2.3125, 3)


def head_scores() -> HeadScores:
    grids = [torch.tensor([[0.125, 0.25, 0.875], [0.5, 0.0625, 0.375]]) + i / 64 for i in range(4)]
    return HeadScores(*grids, seq_len=12, n_seqs=3, seed=4, model="zoo:planted", fold_ln=True)


def arithmetic() -> ArithmeticResult:
    return ArithmeticResult(1, 2, 1.5, {"numbers": 0.75, "days": 0.5}, {"numbers": 8, "days": 4},
                            {0.5: {"numbers": 0.25, "days": 0.125}, 1.5: {"numbers": 0.75, "days": 0.5}}, 0.6875,
                            [(1, 2), (3, 4)], [{"task": "numbers", "from": "13", "to": "15", "ok": True}])


def mod10() -> Mod10Result:
    features = [{"residue": r, "seed": 0, "feature": 40 + r, "effect": 0.125 * r, "coverage": 0.5 + r / 32,
                 "agreement": 1.0} for r in range(10)]
    return Mod10Result(1, 2, features, [[40 + r for r in range(10)]], [0], {"accuracy": 0.9375, "mean_cosine": 0.4375},
                       torch.eye(10, 6), torch.full((10,), 2.5), {"d_sae": 64})


def wild() -> WildResult:
    counts = torch.zeros(2, 3, len(CATEGORIES))
    counts[1, 2, 0], counts[0, 1, 0], counts[0, 0, 1] = 9.0, 3.0, 4.0
    return WildResult(counts, 16, {(1, 2): [{"context": "chapter 17", "token": " 18"}]}, {"source": "texts.txt"})


def patching() -> PatchingResult:
    comps = ["blocks.0.attn:0", "blocks.0.attn:1", "blocks.1.attn:0", "blocks.1.attn:1"]
    effects = torch.tensor([[0.5, -0.25, 1.5, 0.0], [0.25, -0.25, 2.5, 0.5]], dtype=torch.float64)
    return PatchingResult(comps, effects, torch.tensor([1.0, 1.5], dtype=torch.float64),
                          torch.tensor([3.0, 4.5], dtype=torch.float64), "logit diff",
                          {"n_pairs": 2, "method": "exact"})


def mediation() -> MediationResult:
    comps = ["blocks.0.attn:0", "blocks.0.hook_mlp_out", "blocks.1.attn:0", "blocks.1.hook_mlp_out"]

    def effect(nie: list[float]) -> dict[str, Any]:
        return {"te": {"estimate": [0.75], "ci_low": [0.5], "ci_high": [1.0], "se": [0.125]},
                "nde": {"estimate": [0.75 - x for x in nie], "ci_low": [0.0] * 4, "ci_high": [1.0] * 4,
                        "se": [0.1] * 4},
                "nie": {"estimate": nie, "ci_low": [x - 0.125 for x in nie], "ci_high": [x + 0.125 for x in nie],
                        "se": [0.0625] * 4}}

    effects = {"unadjusted": effect([0.375, 0.25, 0.0625, 0.0]), "stratified": effect([0.0625, 0.5, 0.0, 0.125])}
    loc = {"unadjusted": {"top_k_share": 0.9375, "gini": 0.4375, "top_k": 3},
           "stratified": {"top_k_share": 1.0, "gini": 0.5625, "top_k": 3}}
    return MediationResult(comps, "log P(insult next)", 40, 60, {"politics": {"treated": 30, "control": 20},
                                                                 "cooking": {"treated": 10, "control": 40}},
                           effects, loc, {"politics": [0.5, 0.25, 0.0, 0.0]},
                           {"n_pairs": 200, "n_boot": 50, "model": "zoo:planted", "treatment": "toxic cue",
                            "confounder": "topic"})


def autointerp() -> AutointerpResult:
    units = [{"unit": f"{POINT}:{j}", "point": POINT, "explanation": {"text": f"fires on word{j}"},
              "top_and_random": t, "random_only": t / 2, "detection": 0.5, "best_iou": None, "density": 0.125}
             for j, t in ((4, 0.8125), (9, float("nan")), (2, 0.4375))]  # in memory an undefined score is NaN
    ci = {"mean": 0.625, "lo": 0.4375, "hi": 0.8125, "n": 2, "n_undefined": 1,
          "zero_filled": {"mean": 0.416, "lo": 0.0, "hi": 0.8}}
    return AutointerpResult("store/", "zoo:planted", "offline", "offline", {"seed": 0}, units,
                            {POINT: {"top_and_random": ci}, "all": {"top_and_random": ci}})


def comparison() -> ComparisonResult:
    metrics = ("top_and_random", "random_only", "detection", "best_iou")

    def ci(mean: float) -> dict[str, Any]:
        return {"mean": mean, "lo": mean - 0.125, "hi": mean + 0.125, "n": 8, "n_undefined": 0,
                "zero_filled": {"mean": mean, "lo": mean - 0.125, "hi": mean + 0.125}}

    def model(base: float, loss: float) -> dict[str, Any]:
        layer = {**{m: ci(base) for m in metrics}, "structure": {"dead_fraction": 0.0, "mean_density": 0.25,
                                                               "median_kurtosis": 3.5}}
        return {"heldout_loss": loss, "n_params": 12_345, "d_mlp": 8, "summary": {"0": layer, "all": layer}}

    rel = {"value": 0.25, "lo": 0.125, "hi": 0.5, "zero_filled": {"value": 0.25, "lo": 0.125, "hi": 0.5}}
    return ComparisonResult(["crate", "gpt"], {"n_sentences": 10}, {"crate": model(0.625, 2.5), "gpt": model(0.5, 3.0)},
                            {"gpt": {layer: {m: rel for m in metrics} for layer in ("0", "all")}}, 1.5,
                            {"crate": [{"unit": "blocks.0.mlp.hook_post:1", "top_and_random": 0.75,
                                        "explanation": "digits"}]}, {"source": "synthetic"}, {})


def spliced() -> SplicedMetrics:
    return SplicedMetrics("blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out", 2.5, 2.625, 3.5, 0.875, 0.0625,
                          4096)


def succession() -> SuccessionResult:
    grid, base = torch.tensor([[0.125, 0.75], [0.5, 0.25]]), torch.tensor([0.0625, 0.125])
    return SuccessionResult(grid, {"numbers": grid, "days": grid / 2}, {"numbers": 20, "days": 7},
                            {"numbers": 1, "days": 0}, {"roman_numerals": grid / 4}, "auto", "zoo:planted", grid,
                            base, base, {"numbers": base}, 0.4, {"numbers": 1, "days": 0}, {"numbers": 40, "days": 14},
                            10, ["numbers"], True)


BUILDERS = {"neuron_ranking": ranking, "accuracy_at_k": accuracy, "selectivity": selectivity,
            "neuron_ablation": ablation, "head_detectors": head_scores, "vector_arithmetic": arithmetic,
            "mod10_features": mod10, "heads_in_the_wild": wild, "activation_patching": patching,
            "mediation": mediation, "autointerp": autointerp, "whitebox_comparison": comparison}
"""kind -> a hand-built result of that kind."""
for _cls, _build in ((SplicedMetrics, spliced), (SuccessionResult, succession)):
    if issubclass(_cls, ResultMixin):  # once converted to the results layer, every test here covers it
        BUILDERS[_cls.kind] = _build  # type: ignore[assignment]
