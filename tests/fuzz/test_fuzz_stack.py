"""Fuzzing transcoder-stack directories (`--transcoders DIR`: one dictionary directory per layer): renamed,
duplicated, extra or broken layer directories give a valid `{layer: transcoder}` or an InputError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz.fuzz_helpers import json_values, valid_or_input_error
from lmscope.dictionary import DictConfig, Dictionary
from lmscope.dictionary.stack import load_transcoders, save_transcoders

_FILES: dict[str, bytes] = {}


def _stack(root: Path) -> Path:
    """A two-layer transcoder stack (saved once, then copied)."""
    if root.exists():
        shutil.rmtree(root)
    if not _FILES:
        tcs = {la: Dictionary(DictConfig(kind="transcoder", d_in=4, d_sae=6, d_out=4, model_id="m",
                                         hook_name=f"blocks.{la}.ln2.hook_normalized",
                                         hook_name_out=f"blocks.{la}.hook_mlp_out"),
                              generator=torch.Generator().manual_seed(la)) for la in (0, 1)}
        save_transcoders(tcs, root)
        _FILES.update({str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()})
        return root
    for rel, data in _FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


@settings(max_examples=80)
@given(op=st.sampled_from(["hook", "kind", "rename", "copy", "junk_dir", "junk_file", "empty"]),
       value=json_values | st.sampled_from(["blocks.7.ln2.hook_normalized", "blocks.1.ln2.hook_normalized",
                                            "blocks.x.ln2.hook_normalized", "sae", "transcoder"]),
       name=st.text(st.sampled_from(list("layer0123 ._-")), min_size=1, max_size=8).filter(
           lambda s: s not in (".", "..")))
def test_stack_mutations(scratch: Path, op: str, value: object, name: str) -> None:
    root = _stack(scratch / "stack")
    if op in ("hook", "kind"):
        cfg = json.loads((root / "layer1" / "cfg.json").read_text())
        if op == "hook":
            cfg["hook_name"] = cfg["metadata"]["hook_name"] = value
        else:
            cfg["kind"] = cfg["architecture"] = value
        (root / "layer1" / "cfg.json").write_text(json.dumps(cfg))
    elif op == "rename" and not (root / name).exists():
        (root / "layer1").rename(root / name)
    elif op == "copy" and not (root / name).exists():
        shutil.copytree(root / "layer0", root / name)
    elif op == "junk_dir" and not (root / name).exists():
        (root / name).mkdir()
        (root / name / "cfg.json").write_text(json.dumps(value))
    elif op == "junk_file" and not (root / name).exists():
        (root / name).write_text(json.dumps(value))
    elif op == "empty":
        for p in root.iterdir():
            shutil.rmtree(p)
    ok, tcs = valid_or_input_error(lambda: load_transcoders(root))
    if ok:
        assert tcs and all(isinstance(la, int) and tc.cfg.kind == "transcoder" for la, tc in tcs.items())
        assert all(tc.cfg.hook_name == f"blocks.{la}.ln2.hook_normalized" for la, tc in tcs.items())
