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
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from lmscope.dictionary.modules import DTYPES, DictConfig, Dictionary
from lmscope.errors import InputError
from lmscope.fileio import atomic_write_bytes, atomic_write_json

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"

_ARCH = {("sae", "relu", False): "standard", ("sae", "topk", False): "topk",
         ("transcoder", "relu", False): "transcoder", ("transcoder", "relu", True): "skip_transcoder",
         ("transcoder", "topk", False): "topk_transcoder", ("transcoder", "topk", True): "topk_skip_transcoder"}
_FROM_ARCH = {arch: key for key, arch in _ARCH.items()}


def dictionary_cfg_json(dictionary: Dictionary) -> dict[str, Any]:
    """The cfg.json contents for `dictionary` (SAELens 6 keys plus lmscope's)."""
    c = dictionary.cfg
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
    return out


def _layer(hook: str) -> int:
    parts = hook.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit() else 0


def save_dictionary(dictionary: Dictionary, directory: str | Path, *, overwrite: bool = False) -> Path:
    """Write `dictionary` to `directory` (created if needed) as cfg.json + sae_weights.safetensors.

    Each file goes through a temporary name and a rename; existing files are refused unless `overwrite`.
    The weights are written first, so a directory with a cfg.json always has its weights.
    """
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    if not overwrite:
        for name in (CFG_FILE, WEIGHTS_FILE):
            if (out / name).exists():
                raise InputError(f"{out / name}: already exists; pass --overwrite (overwrite=True) to replace it")
    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: getattr(dictionary, name).detach().cpu().contiguous()
               for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if dictionary.W_skip is not None:
        tensors["W_skip"] = dictionary.W_skip.detach().cpu().T.contiguous()
    bufs = dict(dictionary.named_buffers())
    if "b_dec_in" in bufs and bool((bufs["b_dec_in"] != 0).any()):
        tensors["b_dec_in"] = bufs["b_dec_in"].detach().cpu().contiguous()
    atomic_write_bytes(out / WEIGHTS_FILE, save(tensors), overwrite=True)
    atomic_write_json(out / CFG_FILE, dictionary_cfg_json(dictionary), overwrite=True)
    return out


def _cfg_from_json(raw: dict[str, Any], where: Path) -> DictConfig:
    """A DictConfig from an lmscope- or SAELens-written cfg.json."""
    meta = raw.get("metadata") or raw.get("meta") or {}
    if not isinstance(meta, dict):
        raise InputError(f"{where}: 'metadata' must be an object")
    arch = raw.get("architecture", "standard")
    if arch not in _FROM_ARCH:
        raise InputError(f"{where}: architecture {arch!r} is not supported; expected one of "
                         f"{', '.join(sorted(_FROM_ARCH))}")
    kind, activation, skip = _FROM_ARCH[arch]
    norm = raw.get("normalize_activations", "none")
    if norm not in ("none", None):
        raise InputError(f"{where}: normalize_activations {norm!r} is not supported (expected 'none'; fold the "
                         "scaling factor into the weights first)")
    dtype = str(raw.get("dtype", "float32")).removeprefix("torch.")
    if dtype not in DTYPES:
        raise InputError(f"{where}: dtype {dtype!r}, expected one of {', '.join(DTYPES)}")
    hook = raw.get("hook_name") or meta.get("hook_name") or ""
    prepend_bos = raw.get("prepend_bos", meta.get("prepend_bos"))
    if prepend_bos is not None and not isinstance(prepend_bos, bool):
        raise InputError(f"{where}: 'prepend_bos' must be true, false or null, got {prepend_bos!r}")
    exclude_first = raw.get("exclude_first", 0)
    if isinstance(exclude_first, bool) or not isinstance(exclude_first, int) or exclude_first < 0:
        raise InputError(f"{where}: 'exclude_first' must be a non-negative integer, got {exclude_first!r}")
    corpus = raw.get("corpus")
    if corpus is not None and not isinstance(corpus, dict):
        raise InputError(f"{where}: 'corpus' must be an object or null")
    try:
        d_in, d_sae = int(raw["d_in"]), int(raw["d_sae"])
        return DictConfig(
            kind=kind, d_in=d_in, d_sae=d_sae, d_out=int(raw.get("d_out") or d_in), activation=activation,
            k=int(raw["k"]) if activation == "topk" else None,
            l1_coefficient=float(raw.get("l1_coefficient") or 0.0), hook_name=hook,
            hook_name_out=raw.get("hook_name_out") or meta.get("hook_name_out") or hook, skip=skip,
            apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", kind == "sae")), dtype=dtype,
            model_id=meta.get("model_name") or raw.get("model_name"), train=dict(raw.get("train") or {}),
            prepend_bos=prepend_bos, exclude_first=exclude_first, corpus=corpus)
    except KeyError as err:
        raise InputError(f"{where}: missing key {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise InputError(f"{where}: {err}") from None


def load_dictionary(directory: str | Path) -> Dictionary:
    """Read a dictionary written by `save_dictionary` or by SAELens (standard, topk, (skip) transcoder)."""
    d = Path(directory)
    cfg_path, w_path = d / CFG_FILE, d / WEIGHTS_FILE
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise InputError(f"{p}: not found; a dictionary directory holds {CFG_FILE} and {WEIGHTS_FILE}")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{cfg_path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{cfg_path}: expected a JSON object")
    cfg = _cfg_from_json(raw, cfg_path)
    try:
        tensors = load(w_path.read_bytes())
    except (SafetensorError, ValueError, OSError) as err:
        raise InputError(f"{w_path}: not a readable safetensors file ({err})") from None
    module = Dictionary(cfg)
    expected = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,), "W_dec": (cfg.d_sae, cfg.d_out),
                "b_dec": (cfg.d_out,)}
    if cfg.skip:
        expected["W_skip"] = (cfg.d_out, cfg.d_in)
    state: dict[str, torch.Tensor] = {}
    for name, shape in expected.items():
        if name not in tensors:
            raise InputError(f"{w_path}: missing tensor {name!r} (has {', '.join(sorted(tensors)) or 'none'})")
        t = tensors[name]
        if tuple(t.shape) != shape:
            raise InputError(f"{w_path}: tensor {name!r} has shape {tuple(t.shape)}, expected {shape} from {CFG_FILE}")
        state[name] = t.T.contiguous() if name == "W_skip" else t
    if "b_dec_in" in tensors:
        if cfg.kind == "sae" and cfg.apply_b_dec_to_input:
            raise InputError(f"{w_path}: a separate 'b_dec_in' contradicts apply_b_dec_to_input=true in {CFG_FILE}")
        if tuple(tensors["b_dec_in"].shape) != (cfg.d_in,):
            raise InputError(f"{w_path}: tensor 'b_dec_in' has shape {tuple(tensors['b_dec_in'].shape)}, "
                             f"expected {(cfg.d_in,)}")
        state["b_dec_in"] = tensors["b_dec_in"]
    with torch.no_grad():
        for name, t in state.items():
            getattr(module, name).copy_(t.to(cfg.torch_dtype))
    return module

