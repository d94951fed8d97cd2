"""The topic-toxicity mediation recipe (cached by weights) and its report section."""

from __future__ import annotations

import json

import pytest
import torch

from lmscope.causal import recipes
from lmscope.report import Report
from lmscope.report.causal_sections import layer_grid, mediation_section
from tiny_models import tiny_hooked_with_tokenizer

SMALL = {"rows": 60, "max_per_cell": 10, "max_pairs": 150, "n_boot": 20}


def test_recipe_caches_by_weights_and_settings(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LMSCOPE_HOME", str(tmp_path))
    model = tiny_hooked_with_tokenizer(400)
    first = recipes.topic_toxicity_mediation(model, **SMALL)
    path = recipes.cache_path(model, {**recipes.DEFAULTS, **SMALL})
    assert path.is_file() and path.parent == tmp_path / "causal"
    assert first.meta["settings"]["rows"] == 60 and set(first.strata) == {"politics", "sports", "cooking", "weather"}

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(recipes, "mediate", refuse)
    again = recipes.topic_toxicity_mediation(model, **SMALL)
    assert again.to_dict() == json.loads(json.dumps(first.to_dict()))
    with pytest.raises(AssertionError, match=r"^recomputed although cached$"):  # other settings: another cache entry
        recipes.topic_toxicity_mediation(model, **{**SMALL, "n_boot": 21})
    with pytest.raises(AssertionError, match=r"^recomputed although cached$"):  # changed weights: another cache entry
        with torch.no_grad():
            model.hf.lm_head.weight.add_(0.01)
        recipes.topic_toxicity_mediation(model, **SMALL)


def test_mediation_section_draws_layer_by_component_heatmaps(tmp_path, monkeypatch) -> None:  # type: ignore
    monkeypatch.setenv("LMSCOPE_HOME", str(tmp_path))
    result = recipes.topic_toxicity_mediation(tiny_hooked_with_tokenizer(400), **SMALL).to_dict()
    section = mediation_section(result, model_name="tiny", treatment="toxic cue", confounder="topic")
    assert set(section.data["heatmaps"]) == {"unadjusted", "stratified", "entropy_balancing"}
    heat = section.data["heatmaps"]["stratified"]
    assert heat["x_labels"] == ["resid", "head 0", "head 1", "head 2", "head 3", "mlp"]
    assert heat["y_labels"] == ["layer 0", "layer 1"]
    labels = result["components"]
    assert heat["z"][1][5] == pytest.approx(result["effects"]["stratified"]["nie"]["estimate"][
        labels.index("blocks.1.hook_mlp_out@-1")])
    report = Report("t")
    report.add(section)
    assert "Localization" in report.render_html()
    assert layer_grid(["blocks.0.attn:1", "a+b"], [1.0, 2.0]) is None
