"""Dictionary files in SAELens's layout: `cfg.json` + `sae_weights.safetensors`.

Tensors: `W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_out]`, `b_dec [d_out]`; skip
transcoders add `W_skip` in SAELens's orientation `[d_out, d_in]` (lmscope holds its transpose); a
separate nonzero `b_dec_in [d_in]` is written only where one exists (a zero one is left out, so
SAELens, which has no such tensor, still loads the file).

cfg.json carries SAELens 6's keys (`architecture`, `d_in`, `d_sae`, `dtype`, `device`,
`apply_b_dec_to_input`, `normalize_activations`, `metadata: {hook_name, model_name, ...}`), `hook_name`
and `model_name` at top level for older readers, `k` for TopK, `d_out` and `hook_name_out` for
transcoders, and lmscope's own keys (`kind`, `activation`, `l1_coefficient`, `skip`, `train`, and the
training data: `prepend_bos`, `exclude_first`, `corpus`), which SAELens ignores. Where the training data is
known, `metadata` also gets SAELens's names for it: `prepend_bos`, `seqpos_slice` (`[first kept position,
null]`, see `lmscope.dictionary.positions`), `dataset_path` and `context_size`. Architectures: "standard",
"topk", "transcoder", "skip_transcoder"; a TopK transcoder is "topk_transcoder", which SAELens (no such
class) refuses rather than loading as ReLU.

`provenance` (lmscope's key, SAELens ignores it) records the model the dictionary was made with: id, dims,
weights fingerprint, dtype and BOS choice (`lmscope.model.provenance`). `load_dictionary(path, model=m)`
refuses a dictionary made with another model unless `allow_mismatch`; files without it still load.

Both files are untrusted input: cfg.json must be strict JSON and every key lmscope reads is type- and
range-checked; the tensors' shapes and dtypes are checked against cfg.json before the module is allocated,
and non-finite weights are refused; lmscope-written files also record the sha256 of the weights file
(`weights_file_sha256`), so a flipped byte is caught even where the tensors still parse; every problem is
one InputError naming the file and the key or tensor.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from lmscope.activations.store import parse_safetensors
from lmscope.dictionary.modules import DTYPES, DictConfig, Dictionary
from lmscope.errors import InputError
from lmscope.fileio import atomic_write_bytes, atomic_write_json
from lmscope.model.provenance import check_provenance, check_record, provenance_record

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"

_ARCH = {("sae", "relu", False): "standard", ("sae", "topk", False): "topk",
         ("transcoder", "relu", False): "transcoder", ("transcoder", "relu", True): "skip_transcoder",
         ("transcoder", "topk", False): "topk_transcoder", ("transcoder", "topk", True): "topk_skip_transcoder"}
_FROM_ARCH = {arch: key for key, arch in _ARCH.items()}


def dictionary_cfg_json(dictionary: Dictionary, provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The cfg.json contents for `dictionary` (SAELens 6 keys plus lmscope's); `provenance`: the model it was
    made with (`lmscope.model.provenance.provenance_record`), default its `provenance` attribute if set."""
    c = dictionary.cfg
    provenance = provenance if provenance is not None else getattr(dictionary, "provenance", None)
    meta: dict[str, Any] = {"model_name": c.model_id, "hook_name": c.hook_name, "hook_head_index": None}
    if c.prepend_bos is not None:  # SAELens's names for the training data: BOS, positions used, dataset
        meta["prepend_bos"] = c.prepend_bos
        meta["seqpos_slice"] = [int(c.prepend_bos) + c.exclude_first, None]
    if c.corpus:
        meta["dataset_path"] = c.corpus.get("source")
        if c.corpus.get("max_tokens"):
            meta["context_size"] = c.corpus["max_tokens"]
    out: dict[str, Any] = {
        "architecture": _ARCH[(c.kind, c.activation, c.skip)], "d_in": c.d_in, "d_sae": c.d_sae,
        "dtype": c.dtype, "device": "cpu", "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": "none", "reshape_activations": "none", "metadata": meta,
        "hook_name": c.hook_name, "model_name": c.model_id,
    }
    if c.activation == "topk":
        out["k"] = c.k
    if c.kind == "transcoder":
        out.update(d_out=c.d_out, hook_name_out=c.hook_name_out, hook_layer_out=_layer(c.hook_name_out),
                   hook_head_index_out=None)
        meta["hook_name_out"] = c.hook_name_out
    out.update(kind=c.kind, activation=c.activation, l1_coefficient=c.l1_coefficient, skip=c.skip,
               lmscope_format="lmscope.dictionary/1", train=c.train, prepend_bos=c.prepend_bos,
               exclude_first=c.exclude_first, corpus=c.corpus)
    if provenance is not None:
        out["provenance"] = dict(provenance)
    return out


def _layer(hook: str) -> int:
    parts = hook.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdecimal() else 0


def save_dictionary(dictionary: Dictionary, directory: str | Path, *, overwrite: bool = False,
                    model: Any = None) -> Path:
    """Write `dictionary` to `directory` (created if needed) as cfg.json + sae_weights.safetensors.

    Each file goes through a temporary name and a rename; existing files are refused unless `overwrite`.
    The weights are written first, so a directory with a cfg.json always has its weights. Non-finite weights
    are refused (nothing is written). `model`: the HookedModel it was made with; its provenance (id, dims,
    weights fingerprint, BOS) goes into cfg.json, as does an already recorded `dictionary.provenance`.
    """
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    if not overwrite:
        for name in (CFG_FILE, WEIGHTS_FILE):
            if (out / name).exists():
                raise InputError(f"{out / name}: already exists; pass --overwrite (overwrite=True) to replace it")
    tensors = {name: getattr(dictionary, name).detach().cpu().contiguous()
               for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if dictionary.W_skip is not None:
        tensors["W_skip"] = dictionary.W_skip.detach().cpu().T.contiguous()
    bufs = dict(dictionary.named_buffers())
    if "b_dec_in" in bufs and bool((bufs["b_dec_in"] != 0).any()):
        tensors["b_dec_in"] = bufs["b_dec_in"].detach().cpu().contiguous()
    bad = [name for name, t in tensors.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise InputError(f"{out}: not written: tensor {bad[0]!r} holds NaN or infinite values (training diverged)")
    cfg = dictionary_cfg_json(dictionary, provenance_record(model) if model is not None else None)
    blob = save(tensors)
    cfg["weights_file_sha256"] = hashlib.sha256(blob).hexdigest()  # verified on load (not by SAELens)
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / WEIGHTS_FILE, blob, overwrite=True)
        atomic_write_json(out / CFG_FILE, cfg, overwrite=True)
    except OSError as err:  # a file where a directory must be, no permission, a full disk
        raise InputError(f"{out}: cannot write the dictionary ({err.strerror or err})") from None
    return out


def _fail(where: Path, key: str, expected: str, value: Any) -> InputError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return InputError(f"{where}: key {key!r} is {shown}; expected {expected}")


def _int(raw: dict[str, Any], key: str, where: Path, *, required: bool = True, minimum: int = 1) -> int | None:
    if key not in raw or raw[key] is None:
        if required:
            raise InputError(f"{where}: missing key {key!r} (expected an integer >= {minimum})")
        return None
    v = raw[key]
    if isinstance(v, float) and v.is_integer():  # SAELens/older writers may store 768.0
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _fail(where, key, f"an integer >= {minimum}", raw[key])
    return v


def _opt(raw: dict[str, Any], key: str, types: type | tuple[type, ...], expected: str, where: Path,
         default: Any = None) -> Any:
    v = raw.get(key, default)
    if v is None:
        return default
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in (types if isinstance(types, tuple)
                                                                        else (types,))):
        raise _fail(where, key, expected, v)
    return v


def _cfg_from_json(raw: dict[str, Any], where: Path) -> DictConfig:
    """A DictConfig from an lmscope- or SAELens-written cfg.json, every key it uses schema-checked (types and
    ranges); one InputError naming the file and the key."""
    meta = raw.get("metadata", raw.get("meta"))
    meta = {} if meta is None else meta
    if not isinstance(meta, dict):
        raise InputError(f"{where}: key 'metadata' must be an object")
    arch = raw.get("architecture", "standard")
    if not isinstance(arch, str) or arch not in _FROM_ARCH:
        raise InputError(f"{where}: architecture {arch!r} is not supported; expected one of "
                         f"{', '.join(sorted(_FROM_ARCH))}")
    kind, activation, skip = _FROM_ARCH[arch]
    norm = raw.get("normalize_activations", "none")
    if norm not in ("none", None):
        raise InputError(f"{where}: normalize_activations {norm!r} is not supported (expected 'none'; fold the "
                         "scaling factor into the weights first)")
    dtype = raw.get("dtype", "float32")
    dtype = dtype.removeprefix("torch.") if isinstance(dtype, str) else dtype
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise InputError(f"{where}: dtype {dtype!r}, expected one of {', '.join(DTYPES)}")
    d_in, d_sae = _int(raw, "d_in", where), _int(raw, "d_sae", where)
    d_out = _int(raw, "d_out", where, required=False) or d_in
    k = _int(raw, "k", where, required=activation == "topk") if activation == "topk" else None
    strs = {key: _opt(raw, key, str, "a string", where) or _opt(meta, key, str, "a string", where)
            for key in ("hook_name", "hook_name_out", "model_name")}
    l1 = _opt(raw, "l1_coefficient", (int, float), "a finite number >= 0", where, 0.0)
    if not math.isfinite(l1) or l1 < 0:
        raise _fail(where, "l1_coefficient", "a finite number >= 0", l1)
    prepend_bos = raw.get("prepend_bos", meta.get("prepend_bos"))
    if prepend_bos is not None and not isinstance(prepend_bos, bool):
        raise InputError(f"{where}: 'prepend_bos' must be true, false or null, got {prepend_bos!r}")
    exclude_first = raw.get("exclude_first", 0)
    if isinstance(exclude_first, bool) or not isinstance(exclude_first, int) or exclude_first < 0:
        raise InputError(f"{where}: 'exclude_first' must be a non-negative integer, got {exclude_first!r}")
    try:
        return DictConfig(
            kind=kind, d_in=d_in, d_sae=d_sae, d_out=d_out, activation=activation, k=k, l1_coefficient=float(l1),
            hook_name=strs["hook_name"] or "", hook_name_out=strs["hook_name_out"] or strs["hook_name"] or "",
            skip=skip, dtype=dtype, model_id=strs["model_name"],
            apply_b_dec_to_input=_opt(raw, "apply_b_dec_to_input", bool, "true or false", where, kind == "sae"),
            train=dict(_opt(raw, "train", dict, "an object", where, {})), prepend_bos=prepend_bos,
            exclude_first=exclude_first, corpus=_opt(raw, "corpus", dict, "an object or null", where))
    except InputError as err:  # DictConfig's own range checks (k <= d_sae, an SAE with d_out != d_in, ...)
        raise InputError(f"{where}: {err}") from None


def _read_cfg(cfg_path: Path) -> dict[str, Any]:
    """cfg.json as a dict: strict JSON (no NaN/Infinity), any read or parse problem one InputError."""
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")
    try:
        raw = json.loads(cfg_path.read_bytes().decode("utf-8"), parse_constant=no_constants)
    except json.JSONDecodeError as err:
        raise InputError(f"{cfg_path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    except UnicodeDecodeError:
        raise InputError(f"{cfg_path}: not UTF-8 text") from None
    except RecursionError:
        raise InputError(f"{cfg_path}: JSON nested too deeply") from None
    except ValueError as err:
        raise InputError(f"{cfg_path}: not strict JSON ({err})") from None
    except OSError as err:
        raise InputError(f"{cfg_path}: cannot read ({err.strerror or err})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{cfg_path}: expected a JSON object")
    return raw


def _read_weights(w_path: Path, sha256: Any) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (views of one buffer), checked against the `sha256` that cfg.json
    records (lmscope-written files; None for others); any problem one InputError naming the file."""
    if sha256 is not None and not isinstance(sha256, str):
        raise InputError(f"{w_path.parent / CFG_FILE}: key 'weights_file_sha256' must be a string")
    try:
        with open(w_path, "rb") as f:
            data = bytearray(f.read())
    except OSError as err:
        raise InputError(f"{w_path}: cannot read ({err.strerror or err})") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise InputError(f"{w_path}: sha256 does not match {CFG_FILE} (the weights were changed after saving)")
    try:
        tensors, _ = parse_safetensors(data)
    except Exception as err:  # a malformed header: json, KeyError, TypeError, ValueError, RuntimeError ...
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{w_path}: not a readable safetensors file ({msg})") from None
    return tensors


def _checked(tensors: dict[str, torch.Tensor], name: str, shape: tuple[int, ...], cfg: DictConfig,
             w_path: Path) -> torch.Tensor:
    """Tensor `name` checked against cfg.json: present, shape, dtype, every value finite."""
    if name not in tensors:
        raise InputError(f"{w_path}: missing tensor {name!r} (has {', '.join(sorted(tensors)) or 'none'})")
    t = tensors[name]
    if tuple(t.shape) != shape:
        raise InputError(f"{w_path}: tensor {name!r} has shape {tuple(t.shape)}, expected {shape} from {CFG_FILE}")
    if t.dtype != cfg.torch_dtype:
        raise InputError(f"{w_path}: tensor {name!r} is {str(t.dtype).removeprefix('torch.')}, {CFG_FILE} says "
                         f"dtype {cfg.dtype}")
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"{w_path}: tensor {name!r} holds NaN or infinite values (training diverged?)")
    return t


def load_dictionary(directory: str | Path, *, model: Any = None, allow_mismatch: bool = False) -> Dictionary:
    """Read a dictionary written by `save_dictionary` or by SAELens (standard, topk, (skip) transcoder).

    Untrusted input: cfg.json is schema-checked, each tensor's shape and dtype checked against it before
    anything is allocated, and non-finite weights refused, each as one InputError naming the file.
    `model`: the HookedModel it will be used with; the recorded provenance is compared with it
    (`lmscope.model.provenance.check_provenance`; `allow_mismatch` turns a weights mismatch into a warning).
    The returned module's `provenance` attribute holds the record (None for older files).
    """
    d = Path(directory)
    cfg_path, w_path = d / CFG_FILE, d / WEIGHTS_FILE
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise InputError(f"{p}: not found; a dictionary directory holds {CFG_FILE} and {WEIGHTS_FILE}")
    raw = _read_cfg(cfg_path)
    cfg = _cfg_from_json(raw, cfg_path)
    record = check_record(raw.get("provenance"), str(cfg_path))
    if model is not None:
        check_provenance(record or ({"model_id": cfg.model_id} if cfg.model_id else None), model,
                         what=f"dictionary {d}", allow_mismatch=allow_mismatch)
    tensors = _read_weights(w_path, raw.get("weights_file_sha256"))
    expected = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,), "W_dec": (cfg.d_sae, cfg.d_out),
                "b_dec": (cfg.d_out,)}
    if cfg.skip:
        expected["W_skip"] = (cfg.d_out, cfg.d_in)
    if "b_dec_in" in tensors:
        if cfg.kind == "sae" and cfg.apply_b_dec_to_input:
            raise InputError(f"{w_path}: a separate 'b_dec_in' contradicts apply_b_dec_to_input=true in {CFG_FILE}")
        expected["b_dec_in"] = (cfg.d_in,)
    state = {name: _checked(tensors, name, shape, cfg, w_path) for name, shape in expected.items()}
    module = Dictionary(cfg)
    with torch.no_grad():
        for name, t in state.items():
            getattr(module, name).copy_(t.T if name == "W_skip" else t)
    module.provenance = record
    return module


def check_dictionary_model(dictionaries: Dictionary | Mapping[Any, Dictionary], model: Any, *, what: str,
                           allow_mismatch: bool = False) -> None:
    """Refuse dictionaries (one, or a stack `{layer: dictionary}`) made with another model than `model`;
    `what` names them in the message (e.g. the --transcoders directory). See `check_provenance`."""
    items = dictionaries.items() if isinstance(dictionaries, Mapping) else [(None, dictionaries)]
    for key, d in items:
        record = getattr(d, "provenance", None)
        if record is None and d.cfg.model_id:
            record = {"model_id": d.cfg.model_id}
        check_provenance(record, model, what=what if key is None else f"{what} (layer {key})",
                         allow_mismatch=allow_mismatch)
