"""White-box vs GPT, side by side: held-out LM loss and neuron interpretability per layer, with bootstrap CIs.

Every model is run on the same text, by default (zoo models only) the held-out synthetic corpus: its MLP
neurons (`mlp.hook_post`; for CRATE the sparse codes) are extracted per word into an activation store and scored
offline by `lmscope.autointerp` (top-and-random and random-only correlation, detection, best IoU with the
corpus's POS / task / topic labels, plus sparsity, dead fraction and kurtosis). The first model is the
candidate; for every other model the result gives the relative improvement `mean(candidate) / mean(other) - 1`
per layer and overall, each with a bootstrap CI, as the CRATE paper reports it. Undefined scores (dead neurons, neurons
constant on the random records) are left out of the means; every summary and improvement also has a
`zero_filled` variant that counts them as 0.

With the user's corpus (`corpus=FILE`) every model sees the same texts: documents cut into windows that fit
every model's tokenizer (at most `seq_len` tokens each); the loss is the mean next-token loss on those windows,
and the neurons are scored on their words. Everything label-free is computed as on the synthetic corpus; the
best label IoU is skipped (`skipped` says so and why): its POS / task / topic labels exist only for the
synthetic corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lmscope.autointerp import RecordConfig, relative_improvement, score_store, synthetic_row_labels
from lmscope.autointerp.result import AutointerpResult
from lmscope.autointerp.scoring import METRICS
from lmscope.errors import InputError
from lmscope.fileio import atomic_write_json
from lmscope.model.hooked import HookedModel
from lmscope.results import ResultMixin, json_safe, result_payload, write_result

Stage = Callable[[str, int, int], None]
HELDOUT_SEED = 1000  # the zoo's held-out corpus (zoo.CORPUS_SEED + 1000, split "heldout")


@dataclass(frozen=True)
class CompareConfig:
    """What the comparison runs on: corpus size and seed, neurons per layer (None: all), record counts."""

    n_sentences: int = 1500
    units_per_layer: int | None = None
    corpus_seed: int = 4242
    heldout_samples: int = 4000
    seq_len: int = 64
    records: RecordConfig = field(default_factory=RecordConfig)
    n_boot: int = 1000


SKIPPED_ON_USER_TEXT = {"best_iou": "needs word labels (POS, task item, topic), which only the synthetic corpus "
                                    "has; every other score needs none"}
"""Scores a comparison on the user's corpus does not compute, and why."""


def heldout_lm_loss(model: HookedModel, n_samples: int = 4000, seq_len: int = 64) -> float:
    """Mean next-token loss (nats) on the zoo's held-out corpus, in windows of `seq_len` (as on the zoo card)."""
    from lmscope.data.synthetic import generate_corpus
    from lmscope.model.training import heldout_loss, pack_tokens

    samples = generate_corpus(n_samples, seed=HELDOUT_SEED, split="heldout")
    ids = model.tokenizer([s.text for s in samples], add_special_tokens=False)["input_ids"]
    return heldout_loss(model.hf, pack_tokens(ids, model.tokenizer.bos_token_id), seq_len)


@dataclass
class ComparisonResult(ResultMixin):
    """Per model: loss and autointerp summaries (per layer and `all`); relative improvements of the first."""

    kind: ClassVar[str] = "whitebox_comparison"
    what: ClassVar[str] = "white-box comparison (written by `lmscope whitebox compare`)"

    models: list[str]
    config: dict[str, Any]
    per_model: dict[str, dict[str, Any]]
    relative: dict[str, dict[str, dict[str, Any]]]
    seconds: float
    units: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    corpus: dict[str, Any] = field(default_factory=lambda: {"source": "synthetic"})
    """`Corpus.to_dict()` of the text every model ran on, plus `n_texts_scored` / `n_texts_loss` for a user's file."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Scores not computed, each with the reason (the label IoU on a user's corpus)."""

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"kind": self.kind, "models": self.models, "config": self.config,
                          "corpus": self.corpus, "skipped": self.skipped, "per_model": self.per_model,
                          "relative_improvement": self.relative, "seconds": self.seconds, "units": self.units})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ComparisonResult:
        """Rebuild from `to_dict()`; `load(path)` reads a comparison's result.json (or its directory) through it."""
        return cls(d["models"], d["config"], d["per_model"], d["relative_improvement"], d["seconds"],
                   d.get("units", {}), d.get("corpus", {"source": "synthetic"}), d.get("skipped", {}))

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False,
             html: str | None = None) -> dict[str, Path]:
        """`result.json` and, when given the page (`lmscope.report.whitebox_sections.comparison_page`, drawn by the
        caller: the report layer sits above this one), `report.html` in `directory`, refused if present unless
        `overwrite`; returns the paths written."""
        return write_result(directory, self, html=html, overwrite=overwrite)


def _layer_key(point: str) -> str:
    return point.split(".")[1] if point.startswith("blocks.") else point


def common_windows(docs: Sequence[str], models: Sequence[HookedModel], max_tokens: int) -> list[str]:
    """Documents cut (at token offsets) into windows that every model tokenizes into at most `max_tokens` tokens
    (and into its context, BOS included): cut by each model's tokenizer in turn until no model cuts further."""
    from lmscope.data.corpus import window_documents

    texts = list(docs)
    for _ in range(4):
        before = texts
        for m in models:
            texts = window_documents(texts, m.tokenizer, min(max_tokens, m.cfg.n_ctx - int(m.prepend_bos)))
        if texts == before:
            break
    return texts


def _load(models: Sequence[str | HookedModel], names: Sequence[str], stage: Stage | None) -> list[HookedModel]:
    out = []
    for name, spec in zip(names, models, strict=True):
        if isinstance(spec, HookedModel):
            out.append(spec)
            continue
        what = f"{name}: {'training' if name.startswith('zoo:') else 'loading'}"
        out.append(HookedModel.from_pretrained(spec, progress=(lambda i, n, w=what: stage(w, i, n)) if stage else None))
    return out


def compare_models(models: Sequence[str | HookedModel], cfg: CompareConfig | None = None, *,
                   names: Sequence[str] | None = None, corpus: str | None = None,
                   stage: Stage | None = None) -> ComparisonResult:
    """Load (or take) each model, measure its loss, extract and score its neurons, compare to the first.

    `corpus`: None (the synthetic held-out corpus, allowed only when every model is a `zoo:` model), "synthetic",
    or a text/JSONL file (see the module docstring for what is computed on it).
    """
    from lmscope.activations import ExtractConfig, extract
    from lmscope.data.corpus import SYNTHETIC, load_corpus
    from lmscope.data.synthetic import generate_corpus

    cfg = cfg or CompareConfig()
    if len(models) < 2:
        raise InputError(f"models: expected at least two models to compare, got {len(models)}", arg="models")
    labels_of = [str(m) if isinstance(m, str) else m.name for m in models] if names is None else list(names)
    if corpus is None:
        for name in labels_of:
            load_corpus(None, model_name=name)  # refuses a model that is not a zoo model: it needs --corpus
        corpus = SYNTHETIC
    docs = load_corpus(corpus, model_name=labels_of[0])  # a missing file is refused before any model loads
    start = time.perf_counter()
    hooked_models = _load(models, labels_of, stage)
    if docs.is_synthetic:
        samples = generate_corpus(cfg.n_sentences, seed=cfg.corpus_seed, split="heldout")
        sentences = [list(s.words) for s in samples]
        labels: dict[str, Any] | None = synthetic_row_labels(samples)
        corpus_info, skipped, loss_texts = {"source": SYNTHETIC}, {}, None
    else:
        windows = common_windows(docs.texts, hooked_models, cfg.seq_len)
        sentences = [w.split() for w in windows[: cfg.n_sentences] if w.split()]
        loss_texts = windows[: cfg.heldout_samples]
        labels, skipped = None, dict(SKIPPED_ON_USER_TEXT)
        corpus_info = {**docs.to_dict(), "n_texts": len(windows), "max_tokens": cfg.seq_len,
                       "n_texts_scored": len(sentences), "n_texts_loss": len(loss_texts)}
    per_model: dict[str, dict[str, Any]] = {}
    results: dict[str, AutointerpResult] = {}
    for name, hooked in zip(labels_of, hooked_models, strict=True):
        def report(what: str, i: int, n: int, name: str = name) -> None:
            if stage is not None:
                stage(f"{name}: {what}", i, n)

        report("loss", 0, 1)
        if loss_texts is None:
            loss = heldout_lm_loss(hooked, cfg.heldout_samples, cfg.seq_len)
        else:
            from lmscope.model.stats import lm_loss

            loss = lm_loss(hooked, loss_texts)
        report("loss", 1, 1)
        points = tuple(f"blocks.{layer}.mlp.hook_post" for layer in range(hooked.cfg.n_layers))
        with tempfile.TemporaryDirectory(prefix="lmscope-compare-") as tmp:
            store = extract(hooked, sentences, Path(tmp) / "store", ExtractConfig(points), model_id=name,
                            progress=lambda i, n, r=report: r("extracting", i, n))
            result = score_store(store, units_per_point=cfg.units_per_layer, labels=labels, cfg=cfg.records,
                                 progress=lambda p, i, n, r=report: r(f"scoring layer {_layer_key(p)}", i, n))
        results[name] = result
        per_model[name] = {"heldout_loss": loss, "n_params": hooked.n_params(), "family": hooked.cfg.family,
                           "d_mlp": hooked.cfg.d_mlp, "n_layers": hooked.cfg.n_layers,
                           "summary": {_layer_key(k): v for k, v in result.summary.items()}}
    relative = _relative(labels_of, results, cfg)
    units = {name: [{k: u[k] for k in ("unit", "point", *METRICS, "density", "kurtosis", "best_iou_label")}
                    | {"explanation": u["explanation"]["text"]} for u in r.units] for name, r in results.items()}
    config = {**asdict(cfg), "models": labels_of}
    return ComparisonResult(labels_of, config, per_model, relative, time.perf_counter() - start, units,
                            corpus_info, skipped)


def _relative(names: Sequence[str], results: dict[str, AutointerpResult],
              cfg: CompareConfig) -> dict[str, dict[str, dict[str, Any]]]:
    """`{other model: {layer or "all": {metric: {value, lo, hi}}}}` for the first model against each other."""
    first = results[names[0]]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for other in names[1:]:
        base = results[other]
        shared = [p for p in dict.fromkeys(u["point"] for u in first.units)
                  if any(u["point"] == p for u in base.units)]
        rows: dict[str, dict[str, Any]] = {}
        for point in [*shared, None]:
            key = "all" if point is None else _layer_key(point)
            rows[key] = {}
            for m in METRICS:
                a, b = first.metric(m, point), base.metric(m, point)
                rows[key][m] = {**relative_improvement(a, b, n_boot=cfg.n_boot, seed=cfg.records.seed),
                                "zero_filled": relative_improvement(a, b, n_boot=cfg.n_boot, seed=cfg.records.seed,
                                                                    fill=0.0)}
        out[other] = rows
    return out


def cached_comparison(models: Sequence[str], cfg: CompareConfig | None = None, *,
                      stage: Stage | None = None) -> ComparisonResult:
    """`compare_models` on the synthetic corpus, cached under `lmscope.model.zoo.home()/whitebox/`, keyed by the
    weights and the settings.

    A retrained model (other weights) or other settings compute afresh; `seconds` is the original run's.
    """
    from lmscope.activations.extract import weights_sha256
    from lmscope.model.zoo import home

    cfg = cfg or CompareConfig()
    hooked = [HookedModel.from_pretrained(m, progress=(lambda i, n, m=m: stage(f"{m}: training", i, n))
                                          if stage else None) for m in models]
    key = json.dumps({"models": list(models), "weights": [weights_sha256(h) for h in hooked],
                      "config": asdict(cfg)}, sort_keys=True)
    path = home() / "whitebox" / f"compare-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
    if path.exists():
        return ComparisonResult.load(path)
    result = compare_models(hooked, cfg, names=list(models), corpus="synthetic", stage=stage)
    atomic_write_json(path, result_payload(result), overwrite=True)
    return result
