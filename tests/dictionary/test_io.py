"""SAELens-layout files: bit-exact round trips, SAELens-written files, and clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmscope.dictionary import DictConfig, Dictionary, load_dictionary, save_dictionary
from lmscope.errors import InputError


def _random(cfg: DictConfig) -> Dictionary:
    m = Dictionary(cfg, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in [*m.parameters(), *m.buffers()]:
            t.copy_(torch.randn(t.shape, generator=torch.Generator().manual_seed(t.numel())))
    return m


CFGS = {
    "sae-relu": DictConfig(kind="sae", d_in=8, d_sae=16, l1_coefficient=0.5, hook_name="blocks.0.hook_resid_post",
                           model_id="zoo:tiny", train={"lr": 0.001}),
    "sae-topk": DictConfig(kind="sae", d_in=8, d_sae=16, activation="topk", k=3, hook_name="blocks.1.hook_mlp_out"),
    "transcoder-skip": DictConfig(kind="transcoder", d_in=8, d_sae=16, d_out=6, skip=True,
                                  hook_name="blocks.1.ln2.hook_normalized", hook_name_out="blocks.1.hook_mlp_out"),
}


@pytest.mark.parametrize("name", list(CFGS))
def test_round_trip_is_bit_exact(name: str, tmp_path: Path) -> None:
    m = _random(CFGS[name])
    save_dictionary(m, tmp_path / "d")
    back = load_dictionary(tmp_path / "d")
    assert back.cfg == m.cfg
    sd, sd2 = m.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    x = torch.randn(4, 8)
    assert torch.equal(m(x)[0], back(x)[0])
    cfg = json.loads((tmp_path / "d" / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == cfg["hook_name"] == m.cfg.hook_name
    for key in ("d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input", "normalize_activations", "architecture"):
        assert key in cfg
    if m.cfg.kind == "transcoder":
        assert cfg["architecture"] == "skip_transcoder" and cfg["d_out"] == 6
        assert cfg["hook_name_out"] == cfg["metadata"]["hook_name_out"] == "blocks.1.hook_mlp_out"
        w = load_file(tmp_path / "d" / "sae_weights.safetensors")
        assert w["W_skip"].shape == (6, 8) and "b_dec_in" in w  # SAELens orientation; nonzero b_dec_in kept


def test_zero_b_dec_in_is_left_out_for_saelens(tmp_path: Path) -> None:
    m = Dictionary(CFGS["transcoder-skip"])
    save_dictionary(m, tmp_path)
    assert set(load_file(tmp_path / "sae_weights.safetensors")) == {"W_enc", "b_enc", "W_dec", "b_dec", "W_skip"}


@pytest.mark.parametrize("arch", ["standard", "topk"])
def test_reads_saelens_written_files(arch: str, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(3)
    w = {"W_enc": torch.randn(8, 16, generator=g), "b_enc": torch.randn(16, generator=g),
         "W_dec": torch.randn(16, 8, generator=g), "b_dec": torch.randn(8, generator=g)}
    save_file(w, tmp_path / "sae_weights.safetensors")
    cfg = {"d_in": 8, "d_sae": 16, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "reshape_activations": "none", "architecture": arch,
           "metadata": {"model_name": "gpt2", "hook_name": "blocks.8.hook_resid_pre", "sae_lens_version": "6.12.1"}}
    if arch == "topk":
        cfg["k"] = 4
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    m = load_dictionary(tmp_path)
    assert m.cfg.hook_name == "blocks.8.hook_resid_pre" and m.cfg.model_id == "gpt2"
    x = torch.randn(5, 8, generator=g)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    if arch == "topk":
        v, i = pre.topk(4, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, i, v.relu())
    else:
        z = pre.relu()
    assert torch.allclose(m(x)[0], z @ w["W_dec"] + w["b_dec"], atol=1e-6)


def test_errors_name_the_file(tmp_path: Path) -> None:
    m = _random(CFGS["sae-relu"])
    save_dictionary(m, tmp_path)
    with pytest.raises(InputError, match="^" + re.escape(f"{tmp_path / 'cfg.json'}: already exists; pass --overwrite")):
        save_dictionary(m, tmp_path)
    save_dictionary(m, tmp_path, overwrite=True)
    cfg_path = tmp_path / "cfg.json"
    weights = tmp_path / "sae_weights.safetensors"
    good = cfg_path.read_text()
    cfg_path.write_text("{not json")
    with pytest.raises(InputError, match="^" + re.escape(f"{cfg_path}: not valid JSON (Expecting property name")):
        load_dictionary(tmp_path)
    cfg_path.write_text(json.dumps({**json.loads(good), "architecture": "gated"}))
    with pytest.raises(InputError, match="^" + re.escape(f"{cfg_path}: architecture 'gated' is not supported; expected "
                                                         "one of skip_transcoder, standard, topk, ")):
        load_dictionary(tmp_path)
    bad = json.loads(good)
    del bad["d_sae"]
    cfg_path.write_text(json.dumps(bad))
    with pytest.raises(InputError, match="^" + re.escape(f"{cfg_path}: missing key 'd_sae' (expected an integer >= 1)")
                                         + "$"):
        load_dictionary(tmp_path)
    cfg_path.write_text(good)
    w = load_file(tmp_path / "sae_weights.safetensors")
    del w["W_dec"]
    save_file(w, tmp_path / "sae_weights.safetensors")
    with pytest.raises(InputError, match="^" + re.escape(f"{weights}: sha256 does not match cfg.json (the weights were "
                                                         "changed after saving)") + "$"):
        load_dictionary(tmp_path)  # lmscope's cfg.json records the weights file's hash
    cfg_path.write_text(json.dumps({k: v for k, v in json.loads(good).items() if k != "weights_file_sha256"}))
    with pytest.raises(InputError, match="^" + re.escape(f"{weights}: missing tensor 'W_dec' (has W_enc, b_dec, b_enc)")
                                         + "$"):
        load_dictionary(tmp_path)  # without it (SAELens files), the tensors themselves are checked
    (tmp_path / "sae_weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="^" + re.escape(f"{weights}: not a readable safetensors file")):
        load_dictionary(tmp_path)
    nowhere = tmp_path / "nowhere" / "cfg.json"
    with pytest.raises(InputError, match="^" + re.escape(f"{nowhere}: not found; a dictionary directory holds cfg.json "
                                                         "and sae_weights.safetensors") + "$"):
        load_dictionary(tmp_path / "nowhere")
