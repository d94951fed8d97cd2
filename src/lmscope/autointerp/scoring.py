"""Explain, simulate, score (Bills et al. 2023), offline by default, for a store's neurons or a dictionary's features.

Scores of one neuron, all on records the explainer never saw:
- `top_and_random`: Pearson correlation of simulated and true activations over every word of the held-out
  top records and the random records together;
- `random_only`: the same over the random records only (undefined, NaN, when the neuron is constant there);
- `detection`: balanced accuracy of telling held-out top records from non-activating ones (largest true
  activation below `threshold` of the maximum) by whether the largest simulated activation reaches it.

With an LLM explainer, every unit is also scored by the offline pair on the same records (`offline_*`
columns), so the LLM's scores are read beside a baseline that costs nothing. An explainer with
`explain_many` explains `unit_batch` units at a time (one batched generation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from lmscope.autointerp.explain import Explainer, Explanation, OfflineExplainer, OfflineSimulator, Simulator
from lmscope.autointerp.records import NeuronRecords, RecordConfig, neuron_records
from lmscope.autointerp.structural import RowLabels, structural_metrics

Progress = Callable[[int, int], None]
METRICS = ("top_and_random", "random_only", "detection", "best_iou")
SCORES = ("top_and_random", "random_only", "detection")
BASELINE = "offline"
BASELINE_METRICS = tuple(f"{BASELINE}_{m}" for m in SCORES)


def correlation(simulated: np.ndarray, true: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant (nothing to correlate)."""
    s, t = np.asarray(simulated, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if s.size < 2 or s.std() == 0 or t.std() == 0:
        return float("nan")
    return float(np.corrcoef(s, t)[0, 1])


@dataclass(frozen=True)
class NeuronScore:
    """One neuron's explanation and its scores."""

    unit: str
    max_activation: float
    explanation: Explanation
    top_and_random: float
    random_only: float
    detection: float
    baseline: NeuronScore | None = None
    """The offline pair's score of the same unit on the same records, when an LLM pair made this one."""


def score_neuron(records: NeuronRecords, explainer: Explainer | None = None, simulator: Simulator | None = None,
                 threshold: float = 0.5, explanation: Explanation | None = None) -> NeuronScore:
    """Explain a neuron from its explanation records (or take `explanation`, already written from them) and
    score the simulation on its held-out records. A neuron that never activates is not simulated: every
    score is undefined for it whatever the prediction (its true activations are constant)."""
    explainer = explainer or OfflineExplainer()
    simulator = simulator or OfflineSimulator()
    if explanation is None:
        explanation = explainer.explain(records.explanation_records(), records.max_activation)
    held = [*records.top_score, *records.random, *records.nonactivating]
    if records.max_activation > 0:
        sims = simulator.simulate(explanation, held)
    else:
        sims = [np.zeros(len(r.words)) for r in held]
    n_top, n_rand = len(records.top_score), len(records.random)

    def joined(parts: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0)

    trues = [r.activations for r in held]
    tar = correlation(joined(sims[: n_top + n_rand]), joined(trues[: n_top + n_rand]))
    rnd = correlation(joined(sims[n_top: n_top + n_rand]), joined(trues[n_top: n_top + n_rand]))
    peak = records.max_activation
    positives = [s.max() >= threshold for s, r in zip(sims[:n_top], held[:n_top], strict=True)
                 if peak > 0 and r.max >= threshold * peak]
    negatives = [s.max() < threshold for s in sims[n_top + n_rand:]]
    detection = 0.5 * (np.mean(positives) + np.mean(negatives)) if positives and negatives else float("nan")
    return NeuronScore(records.unit, peak, explanation, tar, rnd, float(detection))


@dataclass
class ScoredUnits:
    """Scores and structural metrics of a set of units (columns of one activation matrix)."""

    scores: list[NeuronScore]
    structural: dict[str, np.ndarray] = field(default_factory=dict)

    def rows(self, point: str) -> list[dict[str, object]]:
        out = []
        for i, s in enumerate(self.scores):
            row: dict[str, object] = {"unit": s.unit, "point": point, "max_activation": s.max_activation,
                                      "top_and_random": s.top_and_random, "random_only": s.random_only,
                                      "detection": s.detection, "explanation": s.explanation.to_dict()}
            if s.baseline is not None:
                row.update({f"{BASELINE}_{m}": getattr(s.baseline, m) for m in SCORES})
                row[f"{BASELINE}_explanation"] = s.baseline.explanation.to_dict()
            for key, values in self.structural.items():
                v = values[i]
                row[key] = v.item() if hasattr(v, "item") else v
            out.append(row)
        return out


def score_activations(acts: Tensor, sentences: Sequence[Sequence[str]], units: Sequence[str], *,
                      labels: dict[str, RowLabels] | None = None, cfg: RecordConfig | None = None,
                      explainer: Explainer | None = None, simulator: Simulator | None = None,
                      progress: Progress | None = None, baseline: bool | None = None,
                      unit_batch: int = 8, explain_progress: Progress | None = None) -> ScoredUnits:
    """Explain and score every column of `acts [rows, n]` (rows = the words of `sentences`), plus structure.

    `baseline` (default: whenever `explainer` is not the offline one) also scores each unit with the offline
    pair. `progress(i, n)` is called after every unit; `explain_progress(i, n)` after every batched explanation
    (`explain_many`: units explained so far), since one batch can take a while before its first unit is scored."""
    cfg = cfg or RecordConfig()
    if baseline is None:
        baseline = getattr(explainer, "name", "offline") != "offline"
    batch = max(1, unit_batch) if hasattr(explainer, "explain_many") else 1
    scores: list[NeuronScore] = []
    chunk: list[NeuronRecords] = []

    def flush() -> None:
        if hasattr(explainer, "explain_many"):
            explanations = explainer.explain_many(  # type: ignore[union-attr]
                [(r.explanation_records(), r.max_activation) for r in chunk])
            if explain_progress is not None:
                explain_progress(len(scores) + len(chunk), len(units))
        else:
            explanations = [None] * len(chunk)
        for records, explanation in zip(chunk, explanations, strict=True):
            score = score_neuron(records, explainer, simulator, cfg.threshold, explanation)
            if baseline:
                score = replace(score, baseline=score_neuron(records, threshold=cfg.threshold))
            scores.append(score)
            if progress is not None:
                progress(len(scores), len(units))
        chunk.clear()

    for records in neuron_records(acts, sentences, units, cfg):
        chunk.append(records)
        if len(chunk) == batch:
            flush()
    if chunk:
        flush()
    return ScoredUnits(scores, structural_metrics(acts if acts.dtype == torch.float32 else acts.float(), labels))
