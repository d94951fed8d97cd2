"""`lmscope.dictionary.stack`: one transcoder per layer, trained once per weights and settings, then loaded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import lmscope.dictionary.multi as multi
from lmscope.dictionary import DictConfig, Dictionary, save_dictionary
from lmscope.dictionary.stack import load_transcoders, save_transcoders, stack_dir, transcoder_stack
from lmscope.errors import InputError
from tiny_models import tiny_hooked_with_tokenizer


def test_stack_trains_caches_and_reloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMSCOPE_HOME", str(tmp_path / "home"))
    model = tiny_hooked_with_tokenizer(300)
    calls: list[int] = []
    stages: list[tuple[str, int, int]] = []
    train = multi.train_stack

    def counting(*args: object, **kwargs: object) -> object:
        calls.extend(kwargs["layers"])  # type: ignore[arg-type]
        return train(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(multi, "train_stack", counting)
    first = transcoder_stack(model, d_sae=16, tokens=2048, progress=lambda *s: stages.append(s))
    assert calls == [0, 1] and sorted(first) == [0, 1] and stages[-1] == ("training transcoders", 2, 2)
    settings = {"d_sae": 16, "tokens": 2048, "l1_coefficient": 1.0, "seed": 0, "trainer": "one-pass"}
    where = stack_dir(model, settings)
    assert where.parent == tmp_path / "home" / "transcoders" and (where / "layer1" / "cfg.json").exists()
    again = transcoder_stack(model, d_sae=16, tokens=2048)
    assert calls == [0, 1]  # loaded, not retrained
    assert all(torch.equal(again[i].W_dec, first[i].W_dec) for i in (0, 1))
    assert first[1].cfg.hook_name == "blocks.1.ln2.hook_normalized"
    with torch.no_grad():
        model.hf.transformer.h[0].mlp.c_fc.weight.add_(0.01)  # other weights: another cache entry
    assert stack_dir(model, settings) != where
    transcoder_stack(model, layers=[1], d_sae=16, tokens=2048, cache=False)
    assert calls == [0, 1, 1]
    loaded = load_transcoders(where)
    assert sorted(loaded) == [0, 1] and torch.equal(loaded[0].W_enc, first[0].W_enc)
    out = save_transcoders({1: first[1]}, tmp_path / "mine")
    assert sorted(load_transcoders(out)) == [1] and sorted(load_transcoders(out / "layer1")) == [1]


def test_load_transcoders_refuses(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(InputError, match="^" + re.escape(f"directory: {missing} is not a directory") + "$"):
        load_transcoders(tmp_path / "missing")
    with pytest.raises(InputError, match="^" + re.escape(f"directory: {tmp_path} holds no cfg.json (expected one "
                                                         "transcoder directory per layer)") + "$"):
        load_transcoders(tmp_path)
    sae = Dictionary(DictConfig(kind="sae", d_in=8, d_sae=4, hook_name="blocks.0.hook_resid_post"))
    save_dictionary(sae, tmp_path / "sae")
    with pytest.raises(InputError, match="^" + re.escape(f"{tmp_path / 'sae'}: not an MLP transcoder (kind 'sae', hook "
                                                         "'blocks.0.hook_resid_post')") + "$"):
        load_transcoders(tmp_path)
    tc = Dictionary(DictConfig(kind="transcoder", d_in=8, d_sae=4, hook_name="blocks.0.ln2.hook_normalized",
                               hook_name_out="blocks.0.hook_mlp_out"))
    for name in ("a", "b"):
        save_dictionary(tc, tmp_path / "two" / name)
    with pytest.raises(InputError, match="a second transcoder for layer 0"):
        load_transcoders(tmp_path / "two")
