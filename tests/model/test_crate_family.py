"""CRATE is a model family of the spine like the others: the packaged zoo CRATE loads through `lmscope.model`
alone (its config.json's `model_type: "crate"` resolved by transformers' Auto classes, which `lmscope.model`
registers), and nothing in `lmscope.model` imports the `whitebox` analysis package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from lmscope.model import zoo

MODEL_DIR = Path(zoo.__file__).parent


def test_the_packaged_crate_loads_without_the_whitebox_package() -> None:
    config = json.loads((zoo.PACKAGED / "crate-tiny" / "config.json").read_text())
    assert config["model_type"] == "crate" and config["architectures"] == ["CrateForCausalLM"]
    script = (
        "import sys, torch\n"
        "from lmscope import HookedModel\n"
        "m = HookedModel.from_pretrained('zoo:crate-tiny')\n"
        "ids = torch.tensor([[0, 5, 9, 14]])\n"
        "print(m.cfg.family, type(m.hf).__module__, 'lmscope.whitebox' in sys.modules,\n"
        "      torch.equal(m(ids), m.hf(input_ids=ids).logits), m.adapter.ln1(1) is m.hf.transformer.h[1].ln_1)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["crate", "lmscope.model.crate", "False", "True", "True"], out.stderr


def test_the_spine_never_imports_the_whitebox_package() -> None:
    importers = [p.name for p in sorted(MODEL_DIR.glob("*.py"))
                 if re.search(r"^\s*(from|import)\s+lmscope\.whitebox", p.read_text(), re.MULTILINE)]
    assert importers == []
