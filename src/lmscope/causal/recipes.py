"""The topic-confounded toxicity mediation on a model, end to end, cached by the model's weights.

Rows come from `lmscope.causal.data.topic_mediation_rows`; the outcome is the log probability of an
insult next; the mediators are every head, MLP and residual stream at the last token. The result is
cached under `lmscope.model.zoo.home()/causal/`, keyed by the weights and the settings, so a retrained
model is analysed afresh and an unchanged one is read back.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from lmscope.causal.components import standard_components
from lmscope.causal.data import topic_mediation_rows
from lmscope.causal.engine import Progress
from lmscope.causal.mediation import mediate
from lmscope.causal.results import MediationResult
from lmscope.causal.scorers import lexicon_mass
from lmscope.fileio import atomic_write_json
from lmscope.model.hooked import HookedModel
from lmscope.results import read_result, result_payload

DEFAULTS: dict[str, Any] = {"rows": 400, "max_per_cell": 60, "seed": 0, "max_pairs": 800, "n_boot": 300,
                            "components": "heads,mlp,resid", "top_k": 3}


def cache_path(model: HookedModel, settings: dict[str, Any]) -> Path:
    from lmscope.activations.extract import weights_sha256
    from lmscope.model.zoo import home

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.name).strip("_") or "model"
    tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return home() / "causal" / f"{name}-{weights_sha256(model)[:16]}-{tag}.json"


def topic_toxicity_mediation(model: HookedModel, *, cache: bool = True, progress: Progress | None = None,
                             **overrides: Any) -> MediationResult:
    """Mediation of a toxic cue's effect on the next insult, with the topic as confounder (see the module doc)."""
    settings = {**DEFAULTS, **overrides}
    path = cache_path(model, settings)
    if cache and path.is_file():
        return MediationResult.from_dict(read_result(path, kind=MediationResult.kind))
    rows = topic_mediation_rows(settings["rows"], seed=settings["seed"], max_per_cell=settings["max_per_cell"])
    comps = standard_components(model.cfg.n_layers, model.cfg.n_heads, settings["components"])
    result = mediate(model, [r["text"] for r in rows], [r["toxic_cue"] for r in rows], [r["topic"] for r in rows],
                     comps, lexicon_mass(model, log=True), n_boot=settings["n_boot"], max_pairs=settings["max_pairs"],
                     top_k=settings["top_k"], seed=settings["seed"], outcome_name="log P(insult next)",
                     progress=progress)
    result.meta["settings"] = settings
    if cache:
        atomic_write_json(path, result_payload(result), overwrite=True)
    return result
