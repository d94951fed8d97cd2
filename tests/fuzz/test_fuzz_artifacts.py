"""Fuzzing the artifact readers: activation store manifests and shards, dictionary cfg.json and weights, and
provenance records. Tampered or random content gives a valid value or an InputError; written ones read back."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from fuzz.fuzz_helpers import json_values, valid_or_input_error
from lmscope.activations.store import FORMAT, ActivationStore, check_manifest, parse_safetensors, shard_name
from lmscope.dictionary import DictConfig, Dictionary, load_dictionary, save_dictionary
from lmscope.model.provenance import check_record

POINT = "blocks.0.mlp.hook_post"
SENTENCES = [["a", "b", "c"], ["d"], ["e", "f"]]


def _shard(first: int, sents: list[list[str]], d: int = 4) -> bytes:
    rows = sum(map(len, sents))
    g = torch.Generator().manual_seed(first)
    tensors = {POINT: torch.randn(rows, d, generator=g),
               "sentence_index": torch.repeat_interleave(torch.arange(first, first + len(sents)),
                                                         torch.tensor([len(s) for s in sents])),
               "word_index": torch.cat([torch.arange(len(s)) for s in sents])}
    return save(tensors, metadata={"lmscope": json.dumps({"sentences": sents, "first_sentence": first})})


_STORE_FILES: dict[str, bytes] = {}


def _make_store(root: Path) -> Path:
    """A two-shard store laid out as `lmscope.activations.extract` writes it (built once, then copied)."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    if not _STORE_FILES:
        shards = []
        for i, (first, sents) in enumerate([(0, SENTENCES[:2]), (2, SENTENCES[2:])]):
            data = _shard(first, sents)
            _STORE_FILES[shard_name(i)] = data
            shards.append({"index": i, "file": shard_name(i), "sha256": hashlib.sha256(data).hexdigest(),
                           "size": len(data), "first_sentence": first, "n_sentences": len(sents)})
        manifest = {"format": FORMAT, "status": "complete", "model": {"id": "m", "weights_sha256": "0" * 64},
                    "points": [POINT], "dims": {POINT: 4}, "dtype": "float32", "aggregation": "last",
                    "n_rows": 6, "n_sentences": 3, "shards": shards}
        _STORE_FILES["manifest.json"] = json.dumps(manifest).encode()
    for name, data in _STORE_FILES.items():
        (root / name).write_bytes(data)
    return root


def _read_everything(root: Path) -> None:
    st_ = ActivationStore(root)
    if st_.complete:
        loaded = st_.load()
        sents, words = st_.row_index()
        assert all(t.shape[0] == sents.shape[0] == words.shape[0] for t in loaded.values())
        assert all(isinstance(s, list) for s in st_.sentences())


def test_the_hand_made_store_reads(scratch: Path) -> None:
    root = _make_store(scratch / "base")
    assert ActivationStore(root).load()[POINT].shape == (6, 4)
    assert ActivationStore(root).sentences() == SENTENCES


# ------------------------------------------------------------------------- manifests

paths = st.sampled_from([(), ("format",), ("status",), ("points",), ("dims",), ("dims", POINT), ("n_rows",),
                         ("n_sentences",), ("shards",), ("shards", 0), ("shards", 1), ("shards", 0, "file"),
                         ("shards", 0, "sha256"), ("shards", 0, "size"), ("shards", 0, "index"),
                         ("shards", 1, "first_sentence"), ("shards", 0, "n_sentences"), ("model",),
                         ("provenance",)])


def _set(obj: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not path:
        return value
    *head, last = path
    target = obj
    for k in head:
        target = target[k]
    if delete and isinstance(target, dict):
        target.pop(last, None)
    else:
        target[last] = value
    return obj


@settings(max_examples=150)
@given(value=json_values | st.sampled_from(["../x", "/etc/passwd", "shard-00001.safetensors", "", "."]),
       path=paths, delete=st.booleans())
def test_manifest_mutations(scratch: Path, value: Any, path: tuple[Any, ...], delete: bool) -> None:
    root = _make_store(scratch / "m")
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps(_set(manifest, path, value, delete)))
    valid_or_input_error(lambda: _read_everything(root))


@settings(max_examples=150)
@given(value=json_values)
def test_check_manifest_on_any_json(value: Any) -> None:
    valid_or_input_error(lambda: check_manifest(value, Path("manifest.json")))


@settings(max_examples=50)
@given(data=st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
def test_manifest_bytes(scratch: Path, data: bytes) -> None:
    root = _make_store(scratch / "b")
    (root / "manifest.json").write_bytes(data)
    valid_or_input_error(lambda: _read_everything(root))


# ------------------------------------------------------------------------- shards


shard_meta = json_values | st.fixed_dictionaries(
    {}, optional={"sentences": json_values | st.lists(st.lists(st.text(max_size=3), max_size=3), max_size=3),
                  "first_sentence": json_values | st.integers(-2, 5)})


@settings(max_examples=150)
@given(data=st.data(), op=st.sampled_from(["flip", "truncate", "insert", "header", "retensor"]))
def test_shard_mutations_with_a_matching_hash(scratch: Path, data: st.DataObject, op: str) -> None:
    """A shard changed and its hash forged into the manifest: the bytes are parsed, and must still be refused
    in one line or read as a consistent store."""
    root = _make_store(scratch / "s")
    shard = bytearray((root / shard_name(0)).read_bytes())
    if op == "flip":
        i = data.draw(st.integers(0, len(shard) - 1))
        shard[i] ^= data.draw(st.integers(1, 255))
    elif op == "truncate":
        del shard[data.draw(st.integers(0, len(shard) - 1)):]
    elif op == "insert":
        i = data.draw(st.integers(0, len(shard)))
        shard[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    elif op == "header":  # a forged header of any JSON, correctly length-prefixed
        header = json.dumps(data.draw(json_values | st.dictionaries(
            st.sampled_from([POINT, "sentence_index", "word_index", "__metadata__"]),
            st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "I64", "F16", "BOOL", "X"]) | json_values,
                                   "shape": st.lists(st.integers(-2, 8), max_size=3) | json_values,
                                   "data_offsets": st.lists(st.integers(-4, 400), min_size=2, max_size=2)
                                   | json_values}), max_size=4))).encode()
        shard = bytearray(len(header).to_bytes(8, "little") + header + bytes(shard[-96:]))
    elif op == "retensor":  # well-formed safetensors whose shapes and metadata need not fit the manifest
        rows, idx_rows, width = (data.draw(st.integers(0, 4)) for _ in range(3))
        tensors = {POINT: torch.zeros(rows, width), "sentence_index": torch.zeros(idx_rows, dtype=torch.long),
                   "word_index": torch.zeros(data.draw(st.sampled_from([idx_rows, rows])), dtype=torch.long)}
        shard = bytearray(save(tensors, metadata={"lmscope": json.dumps(data.draw(shard_meta))}))
    (root / shard_name(0)).write_bytes(bytes(shard))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["shards"][0].update(size=len(shard), sha256=hashlib.sha256(bytes(shard)).hexdigest())
    (root / "manifest.json").write_text(json.dumps(manifest))
    valid_or_input_error(lambda: _read_everything(root))


dtypes = st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32,
                          torch.int8, torch.uint8, torch.bool])


@settings(max_examples=60)
@given(specs=st.dictionaries(st.text(min_size=1, max_size=6).filter(lambda s: s != "__metadata__"),
                             st.tuples(dtypes, st.lists(st.integers(0, 4), max_size=3)), max_size=4),
       meta=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))
def test_parse_safetensors_round_trip(specs: dict[str, tuple[torch.dtype, list[int]]], meta: dict[str, str]) -> None:
    g = torch.Generator().manual_seed(0)
    tensors = {k: (torch.randn(shape, generator=g) * 50).to(dt) for k, (dt, shape) in specs.items()}
    back, meta_back = parse_safetensors(bytearray(save(tensors, metadata=meta or None)))
    assert back.keys() == tensors.keys() and meta_back == meta
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype and torch.equal(back[k], t)


# ------------------------------------------------------------------------- dictionaries

ARCHS = [("sae", "relu", False), ("sae", "topk", False), ("transcoder", "relu", False),
         ("transcoder", "relu", True), ("transcoder", "topk", True)]


def _dictionary(kind: str, activation: str, skip: bool, d_in: int, d_sae: int, d_out: int, dtype: str,
                seed: int) -> Dictionary:
    cfg = DictConfig(kind=kind, d_in=d_in, d_sae=d_sae, d_out=d_out if kind == "transcoder" else d_in,
                     activation=activation, k=min(2, d_sae) if activation == "topk" else None, skip=skip,
                     hook_name="blocks.0.ln2.hook_normalized",
                     hook_name_out="blocks.0.hook_mlp_out" if kind == "transcoder" else "", dtype=dtype,
                     model_id="m", l1_coefficient=0.25 if activation == "relu" else 0.0, train={"lr": 1e-3},
                     prepend_bos=True, exclude_first=1, corpus={"source": "x.txt"})
    d = Dictionary(cfg, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for t in d.parameters():
            t.add_(0.5)  # biases off zero, so every tensor round-trips with content
    return d


@settings(max_examples=40)
@given(arch=st.sampled_from(ARCHS), d_in=st.integers(1, 6), d_sae=st.integers(1, 7), d_out=st.integers(1, 5),
       dtype=st.sampled_from(["float32", "float64", "float16", "bfloat16"]), seed=st.integers(0, 9))
def test_dictionary_round_trip(scratch: Path, arch: tuple[str, str, bool], d_in: int, d_sae: int, d_out: int,
                               dtype: str, seed: int) -> None:
    d = _dictionary(*arch, d_in, d_sae, d_out, dtype, seed)
    save_dictionary(d, scratch / "rt", overwrite=True)
    back = load_dictionary(scratch / "rt")
    assert back.cfg == d.cfg
    for (k, a), (k2, b) in zip(d.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b), k


_DICT_FILES: dict[str, bytes] = {}


def _saved_dictionary(root: Path) -> Path:
    """A saved TopK skip transcoder (saved once, then copied)."""
    if root.exists():
        shutil.rmtree(root)
    if not _DICT_FILES:
        save_dictionary(_dictionary("transcoder", "topk", True, 4, 5, 3, "float32", 0), root)
        _DICT_FILES.update({p.name: p.read_bytes() for p in root.iterdir()})
        return root
    root.mkdir(parents=True)
    for name, data in _DICT_FILES.items():
        (root / name).write_bytes(data)
    return root


CFG_KEYS = ["architecture", "d_in", "d_sae", "d_out", "k", "dtype", "hook_name", "hook_name_out", "model_name",
            "l1_coefficient", "apply_b_dec_to_input", "normalize_activations", "metadata", "train", "corpus",
            "prepend_bos", "exclude_first", "provenance", "skip", "kind", "weights_file_sha256"]


@settings(max_examples=150)
@given(key=st.sampled_from(CFG_KEYS), value=json_values | st.integers(-3, 10) | st.sampled_from(
    ["standard", "topk", "transcoder", "skip_transcoder", "topk_transcoder", "topk_skip_transcoder", "float16",
     "torch.float32"]), delete=st.booleans())
@example(key="d_sae", value=10**12, delete=False)  # would allocate terabytes if the module came first
@example(key="hook_name", value=5, delete=False)
def test_cfg_mutations(scratch: Path, key: str, value: Any, delete: bool) -> None:
    root = _saved_dictionary(scratch / "cfg")
    cfg = json.loads((root / "cfg.json").read_text())
    if delete:
        cfg.pop(key, None)
    else:
        cfg[key] = value
    (root / "cfg.json").write_text(json.dumps(cfg))
    ok, d = valid_or_input_error(lambda: load_dictionary(root))
    if ok:  # a loaded cfg has the types the rest of lmscope relies on
        c = d.cfg
        assert isinstance(c.hook_name, str) and isinstance(c.hook_name_out, str) and isinstance(c.train, dict)
        assert c.model_id is None or isinstance(c.model_id, str)
        assert c.corpus is None or isinstance(c.corpus, dict)
        x = torch.randn(2, d.cfg.d_in, dtype=d.cfg.torch_dtype)
        assert d(x)[0].shape == (2, d.cfg.d_out)


@settings(max_examples=50)
@given(data=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_cfg_bytes(scratch: Path, data: bytes) -> None:
    root = _saved_dictionary(scratch / "cfgb")
    (root / "cfg.json").write_bytes(data)
    valid_or_input_error(lambda: load_dictionary(root))


@settings(max_examples=100)
@given(data=st.data(), op=st.sampled_from(["flip", "truncate", "insert"]), hashed=st.booleans())
def test_weights_mutations(scratch: Path, data: st.DataObject, op: str, hashed: bool) -> None:
    """Changed weights bytes, with the cfg.json hash that catches them all, and without it (SAELens files),
    where the parser and the tensor checks must."""
    root = _saved_dictionary(scratch / "w")
    if not hashed:
        cfg = json.loads((root / "cfg.json").read_text())
        cfg.pop("weights_file_sha256")
        (root / "cfg.json").write_text(json.dumps(cfg))
    w = bytearray((root / "sae_weights.safetensors").read_bytes())
    if op == "flip":
        i = data.draw(st.integers(0, len(w) - 1))
        w[i] ^= data.draw(st.integers(1, 255))
    elif op == "truncate":
        del w[data.draw(st.integers(0, len(w) - 1)):]
    else:
        i = data.draw(st.integers(0, len(w)))
        w[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    (root / "sae_weights.safetensors").write_bytes(bytes(w))
    ok, d = valid_or_input_error(lambda: load_dictionary(root))
    if ok:
        assert all(bool(torch.isfinite(t).all()) for t in d.state_dict().values())


@settings(max_examples=100)
@given(value=json_values | st.fixed_dictionaries(
    {"format": st.just("lmscope.provenance/1") | json_values, "model_id": st.text(max_size=5) | json_values,
     "family": st.just("gpt2"), "dtype": st.just("float32"), "weights_fingerprint": st.text(max_size=5),
     "dims": st.dictionaries(st.sampled_from(["n_layers", "d_model", "d_mlp", "n_heads", "d_head", "d_vocab",
                                              "n_ctx"]), st.integers(-1, 5) | json_values),
     "prepend_bos": st.booleans() | json_values}))
def test_provenance_records(value: Any) -> None:
    valid_or_input_error(lambda: check_record(value, "cfg.json"))


@settings(max_examples=100)
@given(dtype=dtypes, n=st.integers(1, 40), start=st.integers(0, 3), data=st.data())
def test_weights_digest_of_views_and_single_edits(dtype: torch.dtype, n: int, start: int,
                                                  data: st.DataObject) -> None:
    """The fingerprint of a tensor is the same for a view at any offset and its copy, and moves whenever any one
    element's bits change (the exact checksum covers the elements the strided sample skips)."""
    from lmscope.model.provenance import _tensor_digest

    base = (torch.randn(n + start, generator=torch.Generator().manual_seed(n)) * 40).to(dtype)
    view = base[start:]
    digest = _tensor_digest(view)
    assert digest == _tensor_digest(view.clone())
    i = data.draw(st.integers(0, n - 1))
    edited = view.clone()
    edited[i] = torch.logical_not(edited[i]) if dtype == torch.bool else edited[i] + 1
    if not torch.equal(edited, view):  # (a large float16 value plus one can round back to itself)
        assert _tensor_digest(edited) != digest
