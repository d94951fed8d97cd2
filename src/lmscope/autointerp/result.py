"""Scoring a whole activation store (a model's neurons or a dictionary's features) into one result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from lmscope.activations import ActivationStore
from lmscope.autointerp.explain import Explainer, Simulator
from lmscope.autointerp.records import RecordConfig
from lmscope.autointerp.scoring import BASELINE_METRICS, METRICS, score_activations
from lmscope.autointerp.stats import bootstrap_mean
from lmscope.autointerp.structural import RowLabels
from lmscope.errors import InputError, bad_argument
from lmscope.model.hooked import HookedModel
from lmscope.results import ResultMixin, json_safe

Progress = Callable[[str, int, int], None]


def summarize(rows: Sequence[dict[str, Any]], *, n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per metric: mean with a bootstrap CI over the rows, plus dead fraction, mean density and kurtosis.

    Undefined scores (a dead neuron, or one constant on the random records) are left out of `mean`;
    `zero_filled` is the same with them counted as 0, the conservative reading. Rows scored beside the
    offline baseline (an LLM explainer) also get `offline_top_and_random` etc.
    """
    out: dict[str, dict[str, Any]] = {}
    for m in (*METRICS, *(b for b in BASELINE_METRICS if rows and b in rows[0])):
        values = [_num(r.get(m)) for r in rows]
        filled = bootstrap_mean(values, n_boot=n_boot, seed=seed, fill=0.0)
        out[m] = {**bootstrap_mean(values, n_boot=n_boot, seed=seed),
                  "zero_filled": {k: filled[k] for k in ("mean", "lo", "hi")}}
    if rows and "dead" in rows[0]:
        out["structure"] = {"dead_fraction": float(np.mean([bool(r["dead"]) for r in rows])),
                            "mean_density": float(np.mean([_num(r["density"]) for r in rows])),
                            "median_kurtosis": float(np.nanmedian([_num(r["kurtosis"]) for r in rows]))
                            if any(np.isfinite(_num(r["kurtosis"])) for r in rows) else None}
    return out


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


@dataclass
class AutointerpResult(ResultMixin):
    """Every scored unit (explanation, scores, structure) and per-point and overall summaries with CIs."""

    kind: ClassVar[str] = "autointerp"

    source: str
    model: str
    explainer: str
    simulator: str
    config: dict[str, Any]
    units: list[dict[str, Any]]
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)

    def metric(self, name: str, point: str | None = None) -> np.ndarray:
        """One metric of every unit (of one point), NaN where undefined."""
        return np.asarray([_num(u.get(name)) for u in self.units if point is None or u["point"] == point])

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"kind": self.kind, "source": self.source, "model": self.model,
                          "explainer": self.explainer, "simulator": self.simulator, "config": self.config,
                          "summary": self.summary, "units": self.units})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AutointerpResult:
        """Rebuild from `to_dict()` (undefined scores stay None, which `metric` reads as NaN)."""
        return cls(str(d["source"]), str(d["model"]), str(d["explainer"]), str(d["simulator"]), dict(d["config"]),
                   [dict(u) for u in d["units"]], dict(d["summary"]))


def _llm_config(explainer: Any) -> dict[str, Any]:
    """What a local-LM explainer ran on (model, dtype), and that the offline scores sit beside its own."""
    lm = getattr(explainer, "lm", None)
    if getattr(explainer, "name", "offline") == "offline":
        return {}
    out: dict[str, Any] = {"baseline": "offline"}
    if lm is not None:
        out.update({"llm_model": lm.name, "llm_dtype": lm.dtype})
    return out


def pick_units(n: int, k: int | None, seed: int, point: str) -> list[int]:
    """Columns to score at `point` (of `n`): all, or a sample of `k` drawn from `seed` and the point's name."""
    if k is None or k >= n:
        return list(range(n))
    rng = np.random.default_rng([seed, sum(point.encode())])
    return sorted(rng.choice(n, size=k, replace=False).tolist())


def _check_units_per_point(units_per_point: int | None) -> None:
    if units_per_point is not None and units_per_point < 1:
        raise bad_argument("units_per_point", "a positive integer", units_per_point)


def _score_point(acts: torch.Tensor, sentences: Sequence[Sequence[str]], units: list[str], point: str, *,
                 labels: dict[str, RowLabels] | None, cfg: RecordConfig, explainer: Explainer | None,
                 simulator: Simulator | None, progress: Progress | None) -> list[dict[str, Any]]:
    scored = score_activations(acts, sentences, units, labels=labels, cfg=cfg, explainer=explainer,
                               simulator=simulator,
                               progress=(lambda i, n: progress(point, i, n)) if progress else None,
                               explain_progress=(lambda i, n: progress(f"{point}, explanations", i, n))
                               if progress else None)
    return scored.rows(point)


def score_store(store: ActivationStore, *, points: Sequence[str] | None = None, units_per_point: int | None = None,
                labels: dict[str, RowLabels] | None = None, dictionary: Any = None,
                dictionary_path: str | None = None, cfg: RecordConfig | None = None,
                explainer: Explainer | None = None, simulator: Simulator | None = None,
                progress: Progress | None = None) -> AutointerpResult:
    """Score a store's neurons (every point, or `points`), or, with `dictionary`, its features at the
    dictionary's hook point. `units_per_point` scores a random sample of that many units per point."""
    cfg = cfg or RecordConfig()
    _check_units_per_point(units_per_point)
    if dictionary is not None:
        points = [dictionary.cfg.hook_name]
    chosen = list(points) if points else store.points
    unknown = [p for p in chosen if p not in store.dims]
    if unknown:
        raise InputError(f"points: {unknown[0]!r} is not in the store at {store.path}; it has "
                         f"{', '.join(store.points)}")
    sentences = store.sentences()
    rows: list[dict[str, Any]] = []
    summary: dict[str, dict[str, Any]] = {}
    for point in chosen:
        acts = store.load([point])[point].float()
        if dictionary is not None:
            with torch.no_grad():
                acts = torch.cat([dictionary.encode(chunk.to(dictionary.cfg.torch_dtype)).float()
                                  for chunk in acts.split(8192)])
            name = f"dict:{dictionary_path or 'dictionary'}"
        else:
            name = point
        cols = pick_units(acts.shape[1], units_per_point, cfg.seed, point)
        point_rows = _score_point(acts[:, cols], sentences, [f"{name}:{j}" for j in cols], point, labels=labels,
                                  cfg=cfg, explainer=explainer, simulator=simulator, progress=progress)
        summary[point] = summarize(point_rows, seed=cfg.seed)
        rows.extend(point_rows)
    summary["all"] = summarize(rows, seed=cfg.seed)
    model = store.manifest.get("model", {})
    positions = {"rows": "words (lmscope extract aligns tokens to words; the BOS position is never a row)",
                 "prepend_bos": model.get("prepend_bos")}
    return AutointerpResult(str(store.path), str(model.get("id", "")), getattr(explainer, "name", "offline"),
                            getattr(simulator, "name", "offline"),
                            {**cfg.__dict__, "units_per_point": units_per_point, "positions": positions,
                             **_llm_config(explainer)}, rows,
                            summary)


def score_texts(model: HookedModel, texts: Sequence[str], *, points: Sequence[str] | None = None,
                dictionary: Any = None, dictionary_path: str | None = None, units_per_point: int | None = None,
                exclude_first: int | None = None, source: str = "", model_name: str | None = None,
                cfg: RecordConfig | None = None, explainer: Explainer | None = None,
                simulator: Simulator | None = None, batch_size: int = 16,
                progress: Progress | None = None) -> AutointerpResult:
    """Score units of `model` on `texts` (the user's corpus): `points`' neurons, or `dictionary`'s features.

    Records are the texts with one activation per token (`lmscope.autointerp.text`); the BOS position and the
    first `exclude_first` text tokens are left out (`PositionRule`; for a dictionary the `exclude_first` it was
    trained with unless given). No word labels here, so `best_iou` is undefined.
    """
    from lmscope.autointerp.text import check_dictionary, choose_columns, text_activations
    from lmscope.dictionary.positions import PositionRule

    cfg = cfg or RecordConfig()
    _check_units_per_point(units_per_point)
    if dictionary is not None:
        points = [check_dictionary(model, dictionary)]
        rule = PositionRule.for_dictionary(model, dictionary, exclude_first)
    else:
        if not points:
            raise InputError("points: name the hook points to score (e.g. blocks.3.mlp.hook_post), or give a "
                             "dictionary to score its features", arg="points")
        rule = PositionRule.for_model(model, exclude_first or 0)
    columns = choose_columns(model, list(points), units_per_point, cfg.seed, dictionary)
    data = text_activations(model, texts, columns, rule=rule, dictionary=dictionary, batch_size=batch_size,
                            progress=(lambda i, n: progress("running the model", i, n)) if progress else None)
    name = f"dict:{dictionary_path or 'dictionary'}" if dictionary is not None else None
    rows: list[dict[str, Any]] = []
    summary: dict[str, dict[str, Any]] = {}
    for point, cols in columns.items():
        units = [f"{name or point}:{j}" for j in cols]
        point_rows = _score_point(data.acts[point], data.contexts, units, point, labels=None, cfg=cfg,
                                  explainer=explainer, simulator=simulator, progress=progress)
        summary[point] = summarize(point_rows, seed=cfg.seed)
        rows.extend(point_rows)
    summary["all"] = summarize(rows, seed=cfg.seed)
    positions = {"rows": "tokens", **rule.to_dict(), "rule": rule.describe(), "n_positions": data.n_positions,
                 "n_rows": data.n_rows, "n_contexts": len(data.contexts)}
    return AutointerpResult(source, model_name or model.name, getattr(explainer, "name", "offline"),
                            getattr(simulator, "name", "offline"),
                            {**cfg.__dict__, "units_per_point": units_per_point, "positions": positions,
                             **_llm_config(explainer)}, rows,
                            summary)
