"""Which model an artifact was made with, and the check that refuses it with another one.

Stores, dictionaries and dictionary stacks are only meaningful with the weights that produced them: a
dictionary trained on one model's MLP inputs reads noise from another model of the same shape. Each such
artifact records `provenance_record(model)`:

    {"format": "lmscope.provenance/1", "model_id": ..., "family": ..., "dtype": "float32",
     "dims": {"n_layers", "d_model", "d_mlp", "n_heads", "d_head", "d_vocab", "n_ctx"},
     "weights_fingerprint": "...", "prepend_bos": true | false}

and `check_provenance(recorded, model, what=...)` compares it with the model in hand: different dimensions
are refused always (nothing would line up); a different weights fingerprint is refused unless the caller
passes `allow_mismatch=True` (the CLI's `--allow-model-mismatch`), in which case it is logged. An artifact
written before provenance existed (no fingerprint) is still read: the check logs a warning and returns.
`check_same_model(a, b, what=...)` compares two records without any model (a dictionary and the store it is
read with). The BOS choice is recorded, not checked: readers take the recorded one (see `lmscope.cli`).

The fingerprint must be cheap on a real model and still change when any weight changes. It is a sha256
over, for every tensor of the state dict in name order: its name, shape and dtype; an exact checksum of all
its bits (the wrapping int32 sum of its bytes read as int32 words: order-independent, so the same on any
device and thread count, and it moves when any single element changes); and the bytes of a fixed strided
sample of `SAMPLE` elements (which catches permuted rows, the one edit a sum misses). Only the sample and
one scalar per tensor leave the device. `weights_sha256` (every byte hashed) is the older, exact and slower
hash that stores also record; `check_provenance` uses it only for records that carry nothing else.
The model's dtype is part of the weights: the same checkpoint loaded in bfloat16 is a different model.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import torch

from lmscope.errors import InputError

log = logging.getLogger(__name__)

FORMAT = "lmscope.provenance/1"
SAMPLE = 4096
"""Elements sampled (evenly strided) from every tensor for the fingerprint."""
DIMS = ("n_layers", "d_model", "d_mlp", "n_heads", "d_head", "d_vocab", "n_ctx")
OVERRIDE = "--allow-model-mismatch"
_INTS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _state(model: Any) -> dict[str, torch.Tensor]:
    return model.hf.state_dict(keep_vars=True)


def _cache_key(state: Mapping[str, torch.Tensor]) -> tuple[tuple[int, int, int], ...]:
    # torch bumps a tensor's _version on every in-place edit, so an edited weight invalidates the cache
    return tuple((id(t), t._version, t.data_ptr()) for t in state.values())


def _tensor_digest(t: torch.Tensor) -> tuple[int, bytes]:
    """(wrapping int32 sum of all bits, bytes of the strided sample) of one tensor."""
    flat = t.detach().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    n = flat.numel()
    if n == 0:
        return 0, b""
    raw = flat.contiguous().view(torch.uint8)
    if raw.storage_offset() % 4:  # a view into a shared buffer: the int32 reading needs aligned bytes
        raw = raw.clone()
    whole = raw.numel() // 4 * 4  # the bytes as int32 words (summed in int32: one fast vectorized pass)
    total = int(raw[:whole].view(torch.int32).sum(dtype=torch.int32).item()) if whole else 0
    total += sum(int(b) << (8 * i) for i, b in enumerate(raw[whole:].tolist()))
    step = max(1, n // SAMPLE)
    sample = flat[::step][:SAMPLE].cpu().contiguous()
    return total, sample.view(torch.uint8).numpy().tobytes()


def weights_fingerprint(model: Any) -> str:
    """A cheap fingerprint of `model`'s weights (see the module docstring); cached until a tensor changes."""
    state = _state(model)
    key = _cache_key(state)
    cached = getattr(model, "_lmscope_fingerprint", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = hashlib.sha256(FORMAT.encode())
    with torch.no_grad():
        for name in sorted(state):
            t = state[name]
            total, sample = _tensor_digest(t)
            digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}:{total & (2**32 - 1)}:".encode())
            digest.update(sample)
    out = digest.hexdigest()
    model._lmscope_fingerprint = (key, out)
    return out


def weights_sha256(model: Any) -> str:
    """Every byte of every weight hashed (names, shapes, dtypes and bytes): exact, slower; what stores record
    as `model.weights_sha256` (the same digest as `lmscope.activations.extract.weights_sha256`)."""
    state = _state(model)
    key = _cache_key(state)
    cached = getattr(model, "_lmscope_weights_hash", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = hashlib.sha256()
    for name, tensor in sorted(model.hf.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    model._lmscope_weights_hash = (key, digest.hexdigest())
    return digest.hexdigest()


def model_dims(model: Any) -> dict[str, int]:
    """The model's dimensions that an artifact depends on."""
    return {k: int(getattr(model.cfg, k)) for k in DIMS}


def _dtype(model: Any) -> str:
    p = next(iter(model.hf.parameters()), None)
    return str(p.dtype).removeprefix("torch.") if p is not None else "unknown"


def provenance_record(model: Any) -> dict[str, Any]:
    """What an artifact made with `model` records about it (JSON-safe)."""
    return {"format": FORMAT, "model_id": model.name, "family": model.cfg.family, "dtype": _dtype(model),
            "dims": model_dims(model), "weights_fingerprint": weights_fingerprint(model),
            "prepend_bos": bool(model.prepend_bos)}


def check_record(raw: Any, where: str) -> dict[str, Any] | None:
    """`raw` (a recorded provenance, or None) schema-checked; an InputError naming `where` and the key."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InputError(f"{where}: 'provenance' must be an object, not {type(raw).__name__}")
    if raw.get("format") != FORMAT:
        raise InputError(f"{where}: provenance format {raw.get('format')!r}, expected {FORMAT!r}")
    for key in ("model_id", "family", "dtype", "weights_fingerprint"):
        if not isinstance(raw.get(key), str):
            raise InputError(f"{where}: provenance key {key!r} must be a string")
    dims = raw.get("dims")
    if not isinstance(dims, dict) or any(
            not isinstance(dims.get(k), int) or isinstance(dims.get(k), bool) or dims[k] < 0 for k in DIMS):
        raise InputError(f"{where}: provenance key 'dims' must give a non-negative integer for each of "
                         f"{', '.join(DIMS)}")
    if not isinstance(raw.get("prepend_bos"), bool):
        raise InputError(f"{where}: provenance key 'prepend_bos' must be true or false")
    return raw


def check_provenance(recorded: Mapping[str, Any] | None, model: Any, *, what: str,
                     allow_mismatch: bool = False) -> None:
    """Refuse to use the artifact `what` (e.g. "dictionary runs/sae") with `model` if it was made with another.

    `recorded`: a `provenance_record`, or an older record with only `id`/`model_id` and `weights_sha256`
    (activation store manifests), or None. Different dimensions: always an InputError. Different weights:
    an InputError naming both models, unless `allow_mismatch` (then a logged warning). Nothing to compare
    (no fingerprint, no sha256): a logged warning, and the artifact is used.
    """
    if not recorded:
        log.warning("%s records no model provenance; cannot check it was made with %s", what, model.name)
        return
    name = recorded.get("model_id") or recorded.get("id") or "an unnamed model"
    dims = recorded.get("dims")
    if isinstance(dims, Mapping):
        here = model_dims(model)
        diff = [k for k in DIMS if k in dims and dims[k] != here[k]]
        if diff:
            k = diff[0]
            raise InputError(f"{what} was made with {name} ({k} {dims[k]}), not with {model.name} ({k} {here[k]}); "
                             "its shapes do not fit this model")
    if isinstance(recorded.get("weights_fingerprint"), str):
        old, new = recorded["weights_fingerprint"], weights_fingerprint(model)
    elif isinstance(recorded.get("weights_sha256"), str):
        old, new = recorded["weights_sha256"], weights_sha256(model)
    else:
        log.warning("%s records no weights hash; cannot check it was made with %s", what, model.name)
        return
    if old == new:
        return
    dtype = recorded.get("dtype")
    note = (f"; it was made in {dtype}, this model is {_dtype(model)}"
            if isinstance(dtype, str) and dtype != _dtype(model) else "")
    msg = (f"{what} was made with {name} (weights {old[:12]}), not with {model.name} (weights {new[:12]}): "
           f"the weights differ{note}")
    if allow_mismatch:
        log.warning("%s; used anyway (%s)", msg, OVERRIDE)
        return
    raise InputError(f"{msg}; pass {OVERRIDE} to use it anyway")


def check_same_model(first: Mapping[str, Any] | None, second: Mapping[str, Any] | None, *, what: str,
                     allow_mismatch: bool = False) -> None:
    """Refuse to use two artifacts together (`what`, e.g. "dictionary d with store s") when their records name
    different models, without loading either model: dimensions, then the weights fingerprint (or, where both
    carry only that, the full weights_sha256). Nothing comparable on one side: a logged warning."""
    if not first or not second:
        log.warning("%s: one of them records no model provenance; cannot check they come from one model", what)
        return
    names = [r.get("model_id") or r.get("id") or "an unnamed model" for r in (first, second)]
    dims: list[Any] = [r.get("dims") for r in (first, second)]
    if isinstance(dims[0], Mapping) and isinstance(dims[1], Mapping):
        diff = [k for k in DIMS if k in dims[0] and k in dims[1] and dims[0][k] != dims[1][k]]
        if diff:
            k = diff[0]
            raise InputError(f"{what}: made with {names[0]} ({k} {dims[0][k]}) and {names[1]} ({k} {dims[1][k]}); "
                             "their shapes do not fit together")
    for key in ("weights_fingerprint", "weights_sha256"):
        a, b = first.get(key), second.get(key)
        if isinstance(a, str) and isinstance(b, str):
            if a == b:
                return
            msg = f"{what}: made with different models ({names[0]}, weights {a[:12]}; {names[1]}, weights {b[:12]})"
            if allow_mismatch:
                log.warning("%s; used anyway (%s)", msg, OVERRIDE)
                return
            raise InputError(f"{msg}; pass {OVERRIDE} to use them together anyway")
    log.warning("%s: no weights hash recorded by both; cannot check they come from one model", what)
