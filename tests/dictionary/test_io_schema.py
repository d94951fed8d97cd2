"""cfg.json and sae_weights.safetensors as untrusted input: every bad key, tensor or byte is one InputError
naming the file and what was expected, found before anything large is allocated."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmscope.dictionary import DictConfig, Dictionary, load_dictionary, save_dictionary
from lmscope.errors import InputError

CFG = DictConfig(kind="sae", d_in=8, d_sae=16, l1_coefficient=0.5, hook_name="blocks.0.hook_resid_post",
                 model_id="zoo:tiny")


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    save_dictionary(Dictionary(CFG, generator=torch.Generator().manual_seed(0)), tmp_path / "d")
    return tmp_path / "d"


@pytest.fixture
def unhashed(saved: Path) -> Path:
    """A saved dictionary whose cfg.json records no weights hash (as SAELens writes it): the tensor checks
    below are what stands between a bad weights file and the user."""
    _edit(saved, lambda c: c.pop("weights_file_sha256"))
    return saved


def _edit(d: Path, change: Callable[[dict], object]) -> None:
    cfg = json.loads((d / "cfg.json").read_text())
    change(cfg)
    (d / "cfg.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.update(d_in="8"), r"key 'd_in' is '8'; expected an integer >= 1"),
    (lambda c: c.update(d_in=8.5), r"key 'd_in' is 8\.5; expected an integer >= 1"),
    (lambda c: c.update(d_sae=True), r"key 'd_sae' is True; expected an integer >= 1"),
    (lambda c: c.update(d_sae=0), r"key 'd_sae' is 0; expected an integer >= 1"),
    (lambda c: c.pop("d_in"), r"missing key 'd_in'"),
    (lambda c: c.update(architecture="topk"), r"missing key 'k'"),
    (lambda c: c.update(architecture="topk", k=17), r"k: a TopK dictionary needs 1 <= k <= d_sae \(16\), got 17"),
    (lambda c: c.update(architecture=["standard"]), r"architecture \['standard'\] is not supported"),
    (lambda c: c.update(dtype=32), r"dtype 32, expected one of"),
    (lambda c: c.update(hook_name=5), r"key 'hook_name' is 5; expected a string"),
    (lambda c: c.update(hook_name=None, metadata={"hook_name": ["x"]}), r"key 'hook_name' is \['x'\]"),
    (lambda c: c.update(model_name={"a": 1}), r"key 'model_name' is \{'a': 1\}; expected a string"),
    (lambda c: c.update(l1_coefficient=-1), r"key 'l1_coefficient' is -1; expected a finite number >= 0"),
    (lambda c: c.update(l1_coefficient="0.1"), r"key 'l1_coefficient' is '0\.1'"),
    (lambda c: c.update(apply_b_dec_to_input="yes"), r"key 'apply_b_dec_to_input' is 'yes'; expected true or false"),
    (lambda c: c.update(train=[1]), r"key 'train' is \[1\]; expected an object"),
    (lambda c: c.update(corpus="file.txt"), r"key 'corpus' is 'file\.txt'; expected an object or null"),
    (lambda c: c.update(metadata=[]), r"key 'metadata' must be an object"),
    (lambda c: c.update(prepend_bos=1), r"'prepend_bos' must be true, false or null, got 1"),
    (lambda c: c.update(exclude_first=-2), r"'exclude_first' must be a non-negative integer, got -2"),
    (lambda c: c.update(normalize_activations="expected_average_only_in"), r"normalize_activations .* not supported"),
    (lambda c: c.update(architecture="standard", d_out=6), r"d_out must equal d_in"),
])
def test_cfg_schema(saved: Path, change: Callable[[dict], object], message: str) -> None:
    _edit(saved, change)
    with pytest.raises(InputError, match=rf"^{saved / 'cfg.json'}: .*{message}"):
        load_dictionary(saved)


def test_float_sizes_written_as_integral_numbers_are_read(saved: Path) -> None:
    _edit(saved, lambda c: c.update(d_in=8.0, d_sae=16.0))
    assert load_dictionary(saved).cfg.d_sae == 16


@pytest.mark.parametrize(("text", "message"), [
    ('{"d_in": NaN}', r"not strict JSON \(NaN is not JSON\)"),
    ("[" * 100_000 + "]" * 100_000, r"JSON nested too deeply"),
    ("[1]", r"expected a JSON object"),
    ("", r"not valid JSON \(Expecting value, line 1\)"),
])
def test_cfg_bytes(saved: Path, text: str, message: str) -> None:
    (saved / "cfg.json").write_text(text)
    with pytest.raises(InputError, match=rf"^{saved / 'cfg.json'}: {message}"):
        load_dictionary(saved)
    (saved / "cfg.json").write_bytes(b'{"d_in": "\xff"}')
    with pytest.raises(InputError, match="^" + re.escape(f"{saved / 'cfg.json'}: not UTF-8 text") + "$"):
        load_dictionary(saved)


def test_huge_sizes_are_refused_from_the_tensor_shapes_before_allocation(saved: Path) -> None:
    """d_sae of 10^12 would allocate terabytes if the module were built before the shapes were checked."""
    _edit(saved, lambda c: c.update(d_sae=10**12))
    with pytest.raises(InputError, match=r"sae_weights\.safetensors: tensor 'W_enc' has shape \(8, 16\), expected "
                                         r"\(8, 1000000000000\) from cfg\.json"):
        load_dictionary(saved)


def test_non_finite_and_wrong_dtype_weights_are_refused(unhashed: Path) -> None:
    saved = unhashed
    path = saved / "sae_weights.safetensors"
    good = load_file(path)
    for bad in (float("nan"), float("inf")):
        w = dict(good)
        w["W_dec"] = w["W_dec"].clone()
        w["W_dec"][2, 3] = bad
        save_file(w, path)
        with pytest.raises(InputError, match=r"sae_weights\.safetensors: tensor 'W_dec' holds NaN or infinite"):
            load_dictionary(saved)
    save_file({**good, "b_enc": good["b_enc"].half()}, path)
    with pytest.raises(InputError, match=r"tensor 'b_enc' is float16, cfg\.json says dtype float32"):
        load_dictionary(saved)
    save_file({**good, "b_dec_in": torch.zeros(8)}, path)
    with pytest.raises(InputError, match=r"'b_dec_in' contradicts apply_b_dec_to_input=true"):
        load_dictionary(saved)


def test_unreadable_weights(unhashed: Path) -> None:
    saved = unhashed
    path = saved / "sae_weights.safetensors"
    data = path.read_bytes()
    for broken in (data[:7], data[:40], b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}xxxxxxx", data[:-4]):
        path.write_bytes(broken)
        with pytest.raises(InputError, match=r"^.*sae_weights\.safetensors: not a readable safetensors file"):
            load_dictionary(saved)
    path.unlink()
    path.mkdir()
    with pytest.raises(InputError, match=r"sae_weights\.safetensors: not found"):
        load_dictionary(saved)


def test_save_refuses_non_finite_weights_and_writes_nothing(tmp_path: Path) -> None:
    d = Dictionary(CFG)
    with torch.no_grad():
        d.W_enc[0, 0] = float("nan")
    with pytest.raises(InputError, match=r"not written: tensor 'W_enc' holds NaN or infinite values"):
        save_dictionary(d, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_save_into_an_impossible_place_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'file'}: exists and is not a directory$"):
        save_dictionary(Dictionary(CFG), tmp_path / "file")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'file' / 'sub'}: cannot write the dictionary \(Not a "
                                         r"directory\)$"):
        save_dictionary(Dictionary(CFG), tmp_path / "file" / "sub")


def test_weights_file_hash_recorded_and_verified(saved: Path) -> None:
    import hashlib

    path = saved / "sae_weights.safetensors"
    cfg = json.loads((saved / "cfg.json").read_text())
    assert cfg["weights_file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # inside W_dec's or b_dec's bytes: the tensors still parse, finite, of the right shapes
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=rf"^{path}: sha256 does not match cfg\.json \(the weights were changed "
                                         r"after saving\)$"):
        load_dictionary(saved)
    _edit(saved, lambda c: c.update(weights_file_sha256=5))
    with pytest.raises(InputError, match=r"cfg\.json: key 'weights_file_sha256' must be a string"):
        load_dictionary(saved)
