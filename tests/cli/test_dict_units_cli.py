"""Dictionary features as units from the CLI: `extract --points DIR.hook_sae_acts_post` attaches the dictionary
and stores its codes like any hook point's activations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cli_runner import run
from lmscope.activations import ActivationStore
from tiny_models import save_identity_sae, tiny_hooked_with_tokenizer


def test_extract_stores_a_dictionarys_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An identity SAE at blocks.1.hook_mlp_out with b_dec = -1000: its codes are the hook's values + 1000."""
    model = tiny_hooked_with_tokenizer(400)
    model.hf.save_pretrained(tmp_path / "m")
    model.tokenizer.save_pretrained(tmp_path / "m")
    d = model.cfg.d_model
    save_identity_sae(d, "blocks.1.hook_mlp_out", tmp_path / "sae")
    (tmp_path / "corpus.txt").write_text("the senator voted\nthe chef baked a cake\n")
    feature = f"{tmp_path / 'sae'}.hook_sae_acts_post"
    code, out, err = run(capsys, "extract", str(tmp_path / "m"), "--corpus", str(tmp_path / "corpus.txt"),
                         "--points", f"blocks.1.hook_mlp_out,{feature}", "--out", str(tmp_path / "store"), "--json")
    assert code == 0, err
    assert json.loads(out)["points"] == ["blocks.1.hook_mlp_out", feature]
    acts = ActivationStore(tmp_path / "store").load()
    assert acts[feature].shape == (8, d)  # one row per word
    assert torch.allclose(acts[feature].double(), acts["blocks.1.hook_mlp_out"].double() + 1000, atol=1e-3)
