"""Provenance: the weights fingerprint, the check that refuses an artifact made with another model, and
dictionaries that record and check it (lmscope.model.provenance, lmscope.dictionary.io)."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest
import torch

from lmscope import HookedModel
from lmscope.dictionary import DictConfig, Dictionary, load_dictionary, save_dictionary
from lmscope.dictionary.io import check_dictionary_model
from lmscope.errors import InputError
from lmscope.model import provenance as pv
from tiny_models import tiny_hf_model

HOOK = "blocks.0.ln2.hook_normalized"


@pytest.fixture(scope="module")
def model() -> HookedModel:
    return HookedModel(tiny_hf_model("gpt2"), name="tiny-a")


def _other(model: HookedModel, name: str = "tiny-b", scale: float = 1e-3) -> HookedModel:
    """The same architecture and shapes, one weight changed: a different model."""
    hf = copy.deepcopy(model.hf)
    with torch.no_grad():
        hf.transformer.h[1].mlp.c_fc.weight[3, 5] += scale
    return HookedModel(hf, name=name)


def _dictionary() -> Dictionary:
    return Dictionary(DictConfig(kind="transcoder", d_in=32, d_sae=16, hook_name=HOOK,
                                 hook_name_out="blocks.0.hook_mlp_out", model_id="tiny-a"),
                      generator=torch.Generator().manual_seed(0))


def test_tensor_digest_sum_catches_an_unsampled_element_and_sample_catches_a_permutation() -> None:
    t = torch.randn(3 * pv.SAMPLE)  # stride 3: elements 1, 2, 4, 5, ... are outside the sample
    total, sample = pv._tensor_digest(t)
    edited = t.clone()
    edited[1] += 1.0
    total2, sample2 = pv._tensor_digest(edited)
    assert sample2 == sample and total2 != total
    swapped = t.clone()
    swapped[[0, 3]] = t[[3, 0]]  # two sampled elements exchanged: the same multiset of words
    total3, sample3 = pv._tensor_digest(swapped)
    assert total3 == total and sample3 != sample
    # the checksum is the wrapping int32 sum of the float32 bit patterns (an independent reference)
    words = t.numpy().view("int32").astype("int64").sum()
    assert total == (int(words) + 2**31) % 2**32 - 2**31


def test_tensor_digest_odd_byte_lengths_and_bool() -> None:
    t = torch.tensor([1, 2, 3], dtype=torch.int8)  # 3 bytes: no int32 word, the tail summed byte-wise
    assert pv._tensor_digest(t)[0] == 1 + (2 << 8) + (3 << 16)
    assert pv._tensor_digest(torch.tensor([True, False]))[0] == 1
    assert pv._tensor_digest(torch.zeros(0)) == (0, b"")


def test_tensor_digest_of_an_unaligned_view_equals_its_copy() -> None:
    """A half-precision tensor that is a view into a shared buffer at an odd element offset (2 bytes)."""
    view = torch.arange(11, dtype=torch.float16)[1:]
    assert view.storage_offset() == 1
    assert pv._tensor_digest(view) == pv._tensor_digest(view.clone())


def test_fingerprint_equal_for_equal_weights_and_cached(model: HookedModel) -> None:
    fp = pv.weights_fingerprint(model)
    twin = HookedModel(copy.deepcopy(model.hf), name="copy")
    assert pv.weights_fingerprint(twin) == fp and len(fp) == 64
    assert model._lmscope_fingerprint[1] == fp  # cached on the model
    assert pv.weights_fingerprint(_other(model)) != fp


def test_fingerprint_follows_an_in_place_edit(model: HookedModel) -> None:
    m = HookedModel(copy.deepcopy(model.hf), name="edit")
    before = pv.weights_fingerprint(m)
    with torch.no_grad():
        m.hf.transformer.h[0].attn.c_attn.weight[0, 7] += 0.5  # bumps the tensor's version: cache invalid
    assert pv.weights_fingerprint(m) != before


def test_weights_sha256_equals_the_extraction_hash(model: HookedModel) -> None:
    from lmscope.activations.extract import weights_sha256

    m = HookedModel(copy.deepcopy(model.hf), name="x")
    assert pv.weights_sha256(m) == weights_sha256(HookedModel(copy.deepcopy(model.hf), name="y"))


def test_provenance_record_contents(model: HookedModel) -> None:
    rec = pv.provenance_record(model)
    assert rec == {"format": "lmscope.provenance/1", "model_id": "tiny-a", "family": "gpt2", "dtype": "float32",
                   "dims": {"n_layers": 2, "d_model": 32, "d_mlp": 128, "n_heads": 4, "d_head": 8, "d_vocab": 61,
                            "n_ctx": 64},
                   "weights_fingerprint": pv.weights_fingerprint(model), "prepend_bos": False}
    assert pv.check_record(json.loads(json.dumps(rec)), "x") == rec


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.update(format="other/1"), r"provenance format 'other/1'"),
    (lambda r: r.update(model_id=3), r"provenance key 'model_id' must be a string"),
    (lambda r: r["dims"].update(d_model=-1), r"provenance key 'dims' must give a non-negative integer"),
    (lambda r: r["dims"].pop("n_layers"), r"provenance key 'dims'"),
    (lambda r: r.update(prepend_bos="yes"), r"provenance key 'prepend_bos' must be true or false"),
])
def test_check_record_schema(model: HookedModel, change, message: str) -> None:  # type: ignore[no-untyped-def]
    rec = json.loads(json.dumps(pv.provenance_record(model)))
    change(rec)
    with pytest.raises(InputError, match=rf"^f\.json: {message}"):
        pv.check_record(rec, "f.json")
    with pytest.raises(InputError, match=r"^f\.json: 'provenance' must be an object, not list"):
        pv.check_record([], "f.json")


def test_check_provenance_same_model_passes_other_weights_refused(model: HookedModel,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    rec = pv.provenance_record(model)
    pv.check_provenance(rec, model, what="store s")
    other = _other(model)
    with pytest.raises(InputError, match=r"^store s was made with tiny-a \(weights [0-9a-f]{12}\), not with tiny-b "
                                         r"\(weights [0-9a-f]{12}\): the weights differ; pass "
                                         r"--allow-model-mismatch to use it anyway$"):
        pv.check_provenance(rec, other, what="store s")
    with caplog.at_level(logging.WARNING, logger="lmscope.model.provenance"):
        pv.check_provenance(rec, other, what="store s", allow_mismatch=True)
    assert "the weights differ; used anyway (--allow-model-mismatch)" in caplog.text


def test_check_provenance_other_dims_refused_even_with_override(model: HookedModel) -> None:
    rec = pv.provenance_record(model)
    from transformers import GPT2Config, GPT2LMHeadModel

    wide = HookedModel(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=48, n_head=4, vocab_size=61, n_positions=64)),
                       name="wide")
    with pytest.raises(InputError, match=r"made with tiny-a \(d_model 32\), not with wide \(d_model 48\); its "
                                         r"shapes do not fit"):
        pv.check_provenance(rec, wide, what="d", allow_mismatch=True)


def test_check_provenance_dtype_is_named(model: HookedModel) -> None:
    half = HookedModel(copy.deepcopy(model.hf).to(torch.bfloat16), name="tiny-a")
    with pytest.raises(InputError, match=r"the weights differ; it was made in float32, this model is bfloat16"):
        pv.check_provenance(pv.provenance_record(model), half, what="d")


def test_check_provenance_old_records(model: HookedModel, caplog: pytest.LogCaptureFixture) -> None:
    """A store's older record (id + full weights_sha256) is compared exactly; no hash at all only warns."""
    old = {"id": "zoo:x", "family": "gpt2", "weights_sha256": pv.weights_sha256(model), "prepend_bos": False}
    pv.check_provenance(old, model, what="store s")
    with pytest.raises(InputError, match=r"^store s was made with zoo:x \(weights"):
        pv.check_provenance(old, _other(model), what="store s")
    with caplog.at_level(logging.WARNING, logger="lmscope.model.provenance"):
        pv.check_provenance(None, model, what="dictionary d")
        pv.check_provenance({"model_id": "gpt2"}, model, what="dictionary e")
    assert "dictionary d records no model provenance; cannot check it was made with tiny-a" in caplog.text
    assert "dictionary e records no weights hash; cannot check it was made with tiny-a" in caplog.text


def test_dictionary_records_and_checks_provenance(model: HookedModel, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    save_dictionary(_dictionary(), tmp_path / "d", model=model)
    cfg = json.loads((tmp_path / "d" / "cfg.json").read_text())
    assert cfg["provenance"] == pv.provenance_record(model)
    back = load_dictionary(tmp_path / "d", model=model)
    assert back.provenance == pv.provenance_record(model)
    save_dictionary(back, tmp_path / "again")  # a loaded dictionary keeps its record when saved again
    assert json.loads((tmp_path / "again" / "cfg.json").read_text())["provenance"] == cfg["provenance"]
    other = _other(model)
    with pytest.raises(InputError, match=rf"^dictionary {tmp_path / 'd'} was made with tiny-a .* not with tiny-b "
                                         r".*--allow-model-mismatch"):
        load_dictionary(tmp_path / "d", model=other)
    with caplog.at_level(logging.WARNING, logger="lmscope.model.provenance"):
        assert load_dictionary(tmp_path / "d", model=other, allow_mismatch=True).cfg.d_sae == 16
    assert "used anyway" in caplog.text


def test_dictionary_without_provenance_still_loads_with_a_warning(model: HookedModel, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    save_dictionary(_dictionary(), tmp_path)
    assert "provenance" not in json.loads((tmp_path / "cfg.json").read_text())
    with caplog.at_level(logging.WARNING, logger="lmscope.model.provenance"):
        d = load_dictionary(tmp_path, model=_other(model))
    assert d.provenance is None and "records no weights hash; cannot check it was made with tiny-b" in caplog.text


def test_bad_provenance_in_cfg_is_refused(model: HookedModel, tmp_path: Path) -> None:
    save_dictionary(_dictionary(), tmp_path, model=model)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg["provenance"]["weights_fingerprint"] = None
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"cfg\.json: provenance key 'weights_fingerprint' must be a string"):
        load_dictionary(tmp_path)


def test_check_dictionary_model_names_the_layer(model: HookedModel, tmp_path: Path) -> None:
    save_dictionary(_dictionary(), tmp_path / "layer0", model=model)
    stack = {0: load_dictionary(tmp_path / "layer0")}
    check_dictionary_model(stack, model, what="transcoders tcs")
    with pytest.raises(InputError, match=r"^transcoders tcs \(layer 0\) was made with tiny-a"):
        check_dictionary_model(stack, _other(model), what="transcoders tcs")
    with pytest.raises(InputError, match=r"^one was made with tiny-a"):
        check_dictionary_model(stack[0], _other(model), what="one")


def test_check_same_model_compares_two_records(model: HookedModel, caplog: pytest.LogCaptureFixture) -> None:
    a, b = pv.provenance_record(model), pv.provenance_record(_other(model))
    pv.check_same_model(a, dict(a, model_id="renamed"), what="d with s")
    with pytest.raises(InputError, match=r"^d with s: made with different models \(tiny-a, weights [0-9a-f]{12}; "
                                         r"tiny-b, weights [0-9a-f]{12}\); pass --allow-model-mismatch"):
        pv.check_same_model(a, b, what="d with s")
    with pytest.raises(InputError, match=r"^d with s: made with tiny-a \(d_model 32\) and x \(d_model 64\)"):
        pv.check_same_model(a, {"model_id": "x", "dims": {**a["dims"], "d_model": 64}}, what="d with s",
                            allow_mismatch=True)
    old = {"id": "s", "weights_sha256": pv.weights_sha256(model)}
    pv.check_same_model(old, dict(old), what="two stores")
    with caplog.at_level(logging.WARNING, logger="lmscope.model.provenance"):
        pv.check_same_model(a, b, what="d with s", allow_mismatch=True)
        pv.check_same_model(a, old, what="d with old s")  # fingerprint vs full hash: not comparable
        pv.check_same_model(None, a, what="bare")
    assert "d with s: made with different models" in caplog.text and "used anyway" in caplog.text
    assert "d with old s: no weights hash recorded by both" in caplog.text
    assert "bare: one of them records no model provenance" in caplog.text
