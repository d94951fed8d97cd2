"""The demo's greater-than circuit section, on the zoo model with stand-in transcoders (no training)."""

from __future__ import annotations

import pytest
import torch

import lmscope.dictionary.stack as stack
from lmscope import HookedModel
from lmscope.demo import MAIN_MODEL, DemoContext, _circuit
from lmscope.dictionary import DictConfig, Dictionary


def test_circuit_section(monkeypatch: pytest.MonkeyPatch) -> None:
    model = HookedModel.from_pretrained(f"zoo:{MAIN_MODEL}")
    asked: dict[str, object] = {}

    def stand_in(m: HookedModel, **kwargs: object) -> dict[int, Dictionary]:
        asked.update(kwargs)
        out = {}
        for layer in range(m.cfg.n_layers):
            cfg = DictConfig(kind="transcoder", d_in=m.cfg.d_model, d_sae=64,
                             hook_name=f"blocks.{layer}.ln2.hook_normalized",
                             hook_name_out=f"blocks.{layer}.hook_mlp_out")
            out[layer] = Dictionary(cfg, generator=torch.Generator().manual_seed(layer))
        return out

    monkeypatch.setattr(stack, "transcoder_stack", stand_in)
    ctx = DemoContext({MAIN_MODEL: model}, {MAIN_MODEL: None}, [])
    section = _circuit(ctx)
    assert section.key == "circuit" and asked["d_sae"] == 512
    data = section.data["circuit"]
    assert data["tokens"][-1] == " 17" and "'32'" in " ".join(repr(t) for t in data["tokens"])
    years = [model.tokenizer.get_vocab()[f"{n:02d}"] for n in range(100)]  # '00'..'99' are single tokens
    assert sorted(data["target"]["plus"]) == sorted(years[33:])
    assert sorted(data["target"]["minus"]) == sorted(years[:33])
    assert data["recovery"]["n_features"] == len([n for n in data["graph"]["nodes"] if n["kind"] == "feature"])
    with torch.no_grad():  # the target is the model's own logit difference at the last position
        logits = model.hf(torch.tensor([model.tokenizer(data["prompt"])["input_ids"]])).logits[0, -1].double()
    assert data["target_value"] == pytest.approx(float(logits[years[33:]].mean() - logits[years[:33]].mean()),
                                                 rel=1e-5)
    note = section.blocks[0].text
    assert "1732" in note and "frozen" in note and ctx.extras["circuit"]["seconds"] > 0
    # the headline is the frozen fraction (a share of the target); the live one is kept beside it, named as such
    rec = data["recovery"]
    assert ctx.extras["circuit"]["recovered"] == rec["recovered_frozen"]
    assert ctx.extras["circuit"]["recovered_live"] == rec["recovered"]
    assert "can exceed 100%" in note
